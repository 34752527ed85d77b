#!/bin/sh
# Builds a Debian 12 box for vagrant-libvirt from Debian's packages alone, with the lab's
# packages (./packages) preinstalled, so provisioning never runs apt:
#
#   sh vagrant/box/build.sh OUT.box      (as root; `cargo xtask vagrant box` runs it and caches)
#
# No loop devices or mounts (the build machine's kernel may not read partition tables): the root
# file system is made from a directory with `mke2fs -d` straight into a raw disk image at 1 MiB,
# GRUB's boot.img and core.img (made by the box's own grub-mkimage) are written before it with
# dd, and qemu-img turns the disk into the box's qcow2 image.
#
# Environment: LAB_BOX_MIRROR (default http://deb.debian.org/debian), LAB_BOX_SECURITY_MIRROR
# (default http://deb.debian.org/debian-security), LAB_BOX_WORK (scratch folder, default a new
# one under /var/tmp, removed at the end), LAB_BOX_DISK_GIB (virtual disk size, default 10).
set -eu

out="${1:?usage: build.sh OUT.box}"
here="$(cd "$(dirname "$0")" && pwd)"
mirror="${LAB_BOX_MIRROR:-http://deb.debian.org/debian}"
security="${LAB_BOX_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
disk_gib="${LAB_BOX_DISK_GIB:-10}"
suite=bookworm

log() { echo "[box] $*"; }
die() { echo "[box] error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap builds the root file system as root)"
for tool in mmdebstrap mke2fs sfdisk qemu-img; do
    command -v "$tool" >/dev/null || die "$tool is missing (cargo xtask vagrant box installs it)"
done
pubkey=""
for k in /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub \
    /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub; do
    [ -f "$k" ] && pubkey="$k"
done
[ -n "$pubkey" ] || die "Vagrant's insecure public key (keys/vagrant.pub of the vagrant package) not found"

work="${LAB_BOX_WORK:-$(mktemp -d /var/tmp/lab-box.XXXXXX)}"
mkdir -p "$work"
cleanup() { rm -rf "$work"; }
[ -n "${LAB_BOX_WORK:-}" ] || trap cleanup EXIT INT TERM
root="$work/rootfs"
rm -rf "$root"

packages="$(grep -v '^[[:space:]]*#' "$here/packages" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')"
[ -n "$packages" ] || die "$here/packages lists no package"

log "root file system: Debian $suite from $mirror with $(echo "$packages" | tr ',' '\n' | wc -l) packages (mmdebstrap)"
# The customize hooks run after the packages are installed, with the root file system as $1.
# dpkg without fsync (the image is written once, at the end) and without documentation: the
# install is I/O-bound, and minutes faster so. The initramfs holds only what finds a virtio (or
# IDE) disk with ext4 on it: MODULES=most copies hundreds of drivers, is built twice during the
# install and takes seconds to unpack at every boot under emulation. PostgreSQL's default cluster
# is not made: the lab makes its own (provision/services.sh).
mmdebstrap --variant=apt --mode=root --include="$packages" \
    --dpkgopt=force-unsafe-io \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d" "$1/etc/postgresql-common/createcluster.d"' \
    --essential-hook='echo MODULES=list >"$1/etc/initramfs-tools/conf.d/lab"' \
    --essential-hook='printf "%s\n" virtio_pci virtio_blk virtio_scsi sd_mod ata_piix ext4 >"$1/usr/share/initramfs-tools/modules.d/lab"' \
    --essential-hook='echo "create_main_cluster = false" >"$1/etc/postgresql-common/createcluster.d/lab.conf"' \
    --customize-hook="sh '$here/customize.sh' \"\$1\" '$mirror' '$security' $suite '$pubkey'" \
    "$suite" "$root" \
    "deb $mirror $suite main" \
    "deb $mirror $suite-updates main" \
    "deb $security $suite-security main"

kernel="$(cd "$root/boot" && ls vmlinuz-* | sort -V | tail -n 1)"
initrd="initrd.img-${kernel#vmlinuz-}"
[ -f "$root/boot/$initrd" ] || die "no $initrd next to $kernel in the root file system"
mkdir -p "$root/boot/grub/i386-pc"
cp "$root"/usr/lib/grub/i386-pc/*.mod "$root"/usr/lib/grub/i386-pc/*.lst "$root/boot/grub/i386-pc/"
cat >"$root/boot/grub/grub.cfg" <<CFG
set timeout=0
insmod part_msdos
insmod ext2
set root=(hd0,msdos1)
linux /boot/$kernel root=/dev/vda1 ro console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0 quiet loglevel=3
initrd /boot/$initrd
boot
CFG
# core.img from the box's own GRUB: reads the partition table and ext4, then the config above.
chroot "$root" grub-mkimage -O i386-pc -o /tmp/core.img -p '(hd0,msdos1)/boot/grub' \
    biosdisk part_msdos ext2
mv "$root/tmp/core.img" "$work/core.img"
cp "$root/usr/lib/grub/i386-pc/boot.img" "$work/boot.img"
# The kernel and initrd, kept beside the box: `cargo xtask vagrant` boots them to probe KVM.
cp "$root/boot/$kernel" "$work/vmlinuz"
cp "$root/boot/$initrd" "$work/initrd.img"

log "disk: ${disk_gib} GiB, one partition at 1 MiB, ext4 from the root file system"
disk="$work/disk.raw"
rm -f "$disk"
truncate -s "${disk_gib}G" "$disk"
echo 'start=2048, type=83, bootable' | sfdisk -q "$disk"
sectors=$(( disk_gib * 1024 * 1024 * 2 - 2048 ))
mke2fs -q -F -t ext4 -L root -d "$root" -E offset=1048576 "$disk" "$(( sectors / 2 ))k" \
    || die "mke2fs could not build the file system"
# boot.img's first 440 bytes (the partition table after them stays), core.img from sector 1.
dd if="$work/boot.img" of="$disk" bs=440 count=1 conv=notrunc status=none
core_sectors=$(( ($(stat -c %s "$work/core.img") + 511) / 512 ))
[ "$core_sectors" -lt 2048 ] || die "core.img ($core_sectors sectors) does not fit before the partition"
dd if="$work/core.img" of="$disk" bs=512 seek=1 conv=notrunc status=none

log "box image (qcow2)"
qemu-img convert -O qcow2 "$disk" "$work/box.img"
rm -f "$disk"
cat >"$work/metadata.json" <<JSON
{"provider": "libvirt", "format": "qcow2", "virtual_size": $disk_gib}
JSON
cat >"$work/Vagrantfile" <<'VF'
# Box defaults; the lab's Vagrantfile sets the rest.
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = "virtio"
  end
end
VF
mkdir -p "$(dirname "$out")"
tar -C "$work" -cf "$out.part" metadata.json Vagrantfile box.img
mv "$out.part" "$out"
cp "$work/vmlinuz" "$work/initrd.img" "$(dirname "$out")/"
log "built $out ($(du -h "$out" | cut -f1))"
