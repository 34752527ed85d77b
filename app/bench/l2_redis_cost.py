#!/usr/bin/env python3
"""The L2-hit path's cost per request, for one or more `app` binaries side by side.

Usage: python3 app/bench/l2_redis_cost.py APP_BIN [APP_BIN ...]   (env RUNS, default 5)

Starts one redis-server and one `app serve` per binary (L1 off, SQLite, all on free loopback
ports, in a temporary directory removed at exit), creates 1,000 users, reads each once through
every app (so L2 holds them all), then runs `wrk -t2 -c32 -d4s` on random ids against each app
in turn, RUNS rounds interleaved. Per binary, medians of: req/s; CPU per request of the app and
of redis-server (utime + stime from /proc/PID/stat around the run, over its requests); and
Redis calls per request (GET and MGET, from INFO commandstats), which shows whether L2 reads
were auto-pipelined (cache.l2_coalesce_reads). Ends with redis-benchmark GET on the same
server for reference. Needs redis-server, redis-cli, redis-benchmark and wrk.
"""
import json, os, re, socket, statistics, subprocess, sys, tempfile, time, urllib.request

RUNS = int(os.environ.get('RUNS', '5'))
USERS = 1000


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(p):
    for _ in range(200):
        try:
            socket.create_connection(('127.0.0.1', p), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f'nothing listens on port {p}')


def cpu_s(pid):
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK')


def calls(port):
    out = subprocess.run(['redis-cli', '-p', str(port), 'info', 'commandstats'],
                         capture_output=True, text=True, check=True).stdout
    return {m.group(1): int(m.group(2)) for m in re.finditer(r'cmdstat_(\w+):calls=(\d+)', out)}


def main(apps):
    if not apps:
        raise SystemExit(__doc__)
    procs = []
    with tempfile.TemporaryDirectory(prefix='l2cost') as d:
        try:
            rp = free_port()
            redis = subprocess.Popen(['redis-server', '--port', str(rp), '--bind', '127.0.0.1',
                                      '--save', '', '--appendonly', 'no', '--dir', d],
                                     stdout=subprocess.DEVNULL)
            procs.append(redis)
            wait_port(rp)
            servers = []
            for i, a in enumerate(apps):
                ap = free_port()
                with open(f'{d}/app{i}.toml', 'w') as f:
                    f.write(f'listen = "127.0.0.1:{ap}"\n[database]\nurl = "sqlite://{d}/db.sqlite?mode=rwc"\n'
                            f'[redis]\nurl = "redis://127.0.0.1:{rp}"\n[http.rate_limit]\nenabled = false\n'
                            '[cache]\nl1_enabled = false\nl2_ttl_ms = 3600000\n[queue]\nworkers_in_serve = false\n')
                env = {k: v for k, v in os.environ.items() if not k.startswith('APP_')}
                env['APP_LOG'] = 'info'
                p = subprocess.Popen([a, 'serve', '--config', f'{d}/app{i}.toml'],
                                     stdout=open(f'{d}/app{i}.log', 'w'), stderr=subprocess.STDOUT, env=env)
                procs.append(p)
                wait_port(ap)
                servers.append((a, p, ap))
            first = servers[0][2]
            ids = []
            for n in range(USERS):
                body = json.dumps({'name': f'u{n}', 'email': f'u{n}@example.org'}).encode()
                req = urllib.request.Request(f'http://127.0.0.1:{first}/users', data=body,
                                             headers={'content-type': 'application/json'})
                ids.append(json.load(urllib.request.urlopen(req))['id'])
            for _, _, ap in servers:
                for i in ids:
                    urllib.request.urlopen(f'http://127.0.0.1:{ap}/users/{i}').read()
            with open(f'{d}/read.lua', 'w') as f:
                f.write(f'request = function() return wrk.format("GET", "/users/" .. '
                        f'math.random({min(ids)}, {max(ids)})) end\n')
            res = {}
            for r in range(RUNS):
                for a, p, ap in servers:
                    print(f'round {r + 1}/{RUNS}: {a}', file=sys.stderr)
                    s0, c0, r0 = calls(rp), cpu_s(p.pid), cpu_s(redis.pid)
                    out = subprocess.run(['wrk', '-t2', '-c32', '-d4s', '-s', f'{d}/read.lua',
                                          f'http://127.0.0.1:{ap}/'], capture_output=True, text=True,
                                         check=True).stdout
                    s1, c1, r1 = calls(rp), cpu_s(p.pid), cpu_s(redis.pid)
                    n = int(re.search(r'(\d+) requests in', out).group(1))
                    rps = float(re.search(r'Requests/sec:\s+([\d.]+)', out).group(1))
                    res.setdefault(a, []).append((
                        rps, (c1 - c0) / n * 1e6, (r1 - r0) / n * 1e6,
                        (s1.get('get', 0) - s0.get('get', 0)) / n,
                        (s1.get('mget', 0) - s0.get('mget', 0)) / n))
            bench = subprocess.run(['redis-benchmark', '-p', str(rp), '-t', 'get', '-n', '200000',
                                    '-c', '32', '-q'], capture_output=True, text=True).stdout
            print(f'{"app binary":40} {"req/s":>8} {"app us/req":>10} {"redis us/req":>12} {"GET/req":>8} {"MGET/req":>8}')
            for a, v in res.items():
                med = lambda k: statistics.median(x[k] for x in v)
                print(f'{a[-40:]:40} {med(0):8.0f} {med(1):10.1f} {med(2):12.1f} {med(3):8.3f} {med(4):8.3f}')
            print('redis-benchmark (same server):', bench.strip().splitlines()[-1].split('\r')[-1])
        finally:
            for p in reversed(procs):
                p.terminate()
                p.wait()


if __name__ == '__main__':
    main(sys.argv[1:])
