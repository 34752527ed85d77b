# Prints, as JSON, the VMs that the Vagrantfile next to this script defines: box, name,
# hostname, networks and provisioners of each. Needs only Ruby (no Vagrant): a small stand-in
# for Vagrant's configuration objects records what the Vagrantfile asks for.
#
#   ruby vagrant/list-hosts.rb
#
# tests/tests/vagrant.rs compares the output with topology.json.

require "json"
require "tmpdir"

# The Vagrantfile makes the lab's API token on first use: here, in a folder of our own.
unless ENV["LAB_STATE_DIR"]
  ENV["LAB_STATE_DIR"] = Dir.mktmpdir("lab-list-hosts")
  at_exit { FileUtils.rm_rf(ENV["LAB_STATE_DIR"]) }
end

# Accepts any setting or block and ignores it (provider tuning and the like).
class LabSink
  def method_missing(_name, *_args, **_opts)
    yield LabSink.new if block_given?
    self
  end

  def respond_to_missing?(*)
    true
  end
end

# Records what a Vagrantfile sets on `config.vm` (or on a defined machine's `vm`).
class LabVmRecorder
  attr_reader :settings, :networks, :provisioners, :machines, :synced_folders

  def initialize
    @settings = {}
    @networks = []
    @provisioners = []
    @machines = []
    @synced_folders = []
  end

  def synced_folder(host_path, guest_path, **opts)
    @synced_folders << { "host" => host_path, "guest" => guest_path }.merge(stringify(opts))
  end

  def define(name, **_opts)
    machine = LabConfigRecorder.new
    yield machine if block_given?
    @machines << [name.to_s, machine]
  end

  def network(type, **opts)
    @networks << { "type" => type.to_s }.merge(stringify(opts))
  end

  def provision(type, **opts)
    @provisioners << { "type" => type.to_s }.merge(stringify(opts))
  end

  def provider(_name, **_opts)
    yield LabSink.new, LabSink.new if block_given?
  end

  def method_missing(name, *args, **opts)
    key = name.to_s
    return super unless key.end_with?("=")

    @settings[key.chomp("=")] = args.first
  end

  def respond_to_missing?(name, include_private = false)
    name.to_s.end_with?("=") || super
  end

  private

  def stringify(opts)
    opts.to_h { |k, v| [k.to_s, v.is_a?(Hash) ? v.to_h { |a, b| [a.to_s, b.to_s] } : v] }
  end
end

class LabConfigRecorder
  def vm
    @vm ||= LabVmRecorder.new
  end

  def method_missing(_name, *_args, **_opts)
    LabSink.new
  end

  def respond_to_missing?(*)
    true
  end
end

module Vagrant
  def self.configure(_version)
    @config = LabConfigRecorder.new
    yield @config
  end

  def self.recorded
    @config
  end
end

vagrantfile = File.join(File.expand_path(__dir__), "Vagrantfile")
load vagrantfile
config = Vagrant.recorded or abort("#{vagrantfile} never called Vagrant.configure")
top = config.vm
hosts = top.machines.map do |name, machine|
  vm = machine.vm
  {
    "name" => name,
    "box" => vm.settings.fetch("box", top.settings["box"]),
    "hostname" => vm.settings["hostname"],
    "networks" => vm.networks,
    "provision" => top.provisioners + vm.provisioners,
    "synced_folders" => top.synced_folders + vm.synced_folders,
  }
end
puts JSON.pretty_generate({ "box" => top.settings["box"], "hosts" => hosts })
