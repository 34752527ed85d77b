#!/usr/bin/env python3
"""Redis CPU per queue script: the Redis Streams backend's ENQUEUE, START and COMPLETE, one
job per call (as on `--base`, the last commit before batching by default), batched (as on
`--batched`, the batching commit by default: XREADGROUP, START, COMPLETE per worker cycle)
the fused cycle (COMPLETE reads and starts the next entries: one call per cycle) as on
`--fused` (before the lighter records) and in this tree ("light": the success recorded as
plain fields, no history re-encoded, smaller hashes), with batches of 1, 8 and 32. Drives the scripts' Lua (read from the Rust sources) over RESP
on a redis-server of its own and reads `INFO commandstats` and `INFO cpu` between phases.

    python3 app/bench/profile_scripts.py [--jobs 5000] [--base REV] [--batched REV] [--fused REV]

Needs redis-server and git; no Python packages. See app/docs/queue.md, "Where the Redis
time goes".
"""
import argparse, os, re, shutil, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LUA, SCRIPTS = 'app/src/queue/lua.rs', 'app/src/queue/streams/scripts.rs'

def consts(text):
    return dict(re.findall(r'const (\w+): &str = r#"(.*?)"#;', text, re.S))

def source(path, rev):
    if rev is None:
        return open(os.path.join(ROOT, path)).read()
    return subprocess.run(['git', '-C', ROOT, 'show', '%s:%s' % (rev, path)], check=True,
                          capture_output=True, text=True).stdout

def scripts(rev):
    l, c = consts(source(LUA, rev)), consts(source(SCRIPTS, rev))
    pre = l['NOW_MS'] + l['JOB_HASH'] + c['PRELUDE'] + '\n'
    return {k: pre + c[k] for k in ('ENQUEUE', 'START', 'COMPLETE')}

class R:
    def __init__(s, port):
        s.s = socket.create_connection(('127.0.0.1', port)); s.f = s.s.makefile('rb')
    def send(s, *a):
        out = b'*%d\r\n' % len(a)
        for x in a:
            x = x if isinstance(x, bytes) else str(x).encode()
            out += b'$%d\r\n%s\r\n' % (len(x), x)
        s.s.sendall(out)
    def read(s):
        l = s.f.readline()
        t, r = l[:1], l[1:-2]
        if t in b'+': return r.decode()
        if t == b'-': raise Exception(r.decode())
        if t == b':': return int(r)
        if t == b'$':
            n = int(r)
            if n < 0: return None
            d = s.f.read(n + 2)[:-2]; return d.decode()
        if t == b'*':
            n = int(r)
            if n < 0: return None
            return [s.read() for _ in range(n)]
    def call(s, *a):
        s.send(*a); return s.read()

def stats(r):
    out = {}
    for line in r.call('INFO', 'commandstats').splitlines():
        m = re.match(r'cmdstat_(\w+):calls=(\d+),usec=(\d+)', line)
        if m: out[m[1]] = (int(m[2]), int(m[3]))
    return out

def delta(a, b):
    return {k: (b[k][0] - a.get(k, (0, 0))[0], b[k][1] - a.get(k, (0, 0))[1]) for k in b
            if b[k][0] != a.get(k, (0, 0))[0]}

def cpu(r):
    i = r.call('INFO', 'cpu')
    f = dict(l.split(':') for l in i.splitlines() if ':' in l)
    return float(f['used_cpu_user']) + float(f['used_cpu_sys'])

def run(name, src, port, n, batch):
    r = R(port)
    r.call('FLUSHALL'); r.call('CONFIG', 'RESETSTAT')
    sha = {k: r.call('SCRIPT', 'LOAD', v) for k, v in src.items()}
    st, grp = 'q:stream:{t}:b', 'workers'
    r.call('XGROUP', 'CREATE', st, grp, '0', 'MKSTREAM')
    res = {}
    ids = ['t.%d' % i for i in range(n)]
    def phase(label, fn):
        s0, c0 = stats(r), cpu(r)
        fn()
        d = delta(s0, stats(r)); c = cpu(r) - c0
        ev = d.get('evalsha', (0, 0))
        res[label] = (ev[0], ev[1] / n, c * 1e6 / n,
                      {k: v[0] for k, v in d.items() if k not in ('evalsha', 'info', 'xreadgroup')})
    def args(i):
        return [ids[i], 'b', 'noop', '{"n":%d}' % i, 5, 0, 0, '0', 86400, '', 5]
    def keys(i):
        return ['q:job:{t}:' + ids[i], st, 'q:delayed:{t}:b', 'q:idem:{t}:b:']
    def enq():
        for i0 in range(0, n, batch):
            js = range(i0, min(n, i0 + batch))
            if name == 'base':
                for i in js: r.send('EVALSHA', sha['ENQUEUE'], 4, *keys(i), *args(i))
                for i in js: r.read()
            else:
                ks = [k for i in js for k in keys(i)]; a = [x for i in js for x in args(i)]
                r.call('EVALSHA', sha['ENQUEUE'], len(ks), *ks, *a)
    entries = {}
    def fused():
        def cycle():
            # The first read and START, as the fetch loop does; then each COMPLETE of a batch
            # reads and starts the next one.
            rep = r.call('XREADGROUP', 'GROUP', grp, 'c1', 'COUNT', batch, 'STREAMS', st, '>')
            es = [(e[0], e[1][1]) for e in rep[0][1]]
            ks = [st] + ['q:job:{t}:' + j for _, j in es]
            a = [grp, 'c1'] + [x for e, _ in es for x in (e, 'o' + e)]
            r.call('EVALSHA', sha['START'], len(ks), *ks, *a)
            done = 0
            while es:
                ks = [k for _, j in es for k in ('q:job:{t}:' + j, st)]
                a = [grp, 'c1', 604800, 'n%d' % done, 1, 2, len(es), 'q:job:{t}:'] + \
                    [x for e, _ in es for x in (e, '', '', 0)]
                out, started = r.call('EVALSHA', sha['COMPLETE'], len(ks), *ks, *a)
                assert out == ['ok'] * len(es), out
                done += len(es)
                es = [(x[1], x[2]) for x in started]
                assert all(x[4] == 'run' for x in started), started
            assert done == n, done
        phase('CYCLE', cycle)
        assert r.call('HGET', 'q:job:{t}:' + ids[0], 'state') == 'succeeded'
        assert r.call('XLEN', st) == 0
        return res
    def start():
        got = 0
        while got < n:
            rep = r.call('XREADGROUP', 'GROUP', grp, 'c1', 'COUNT', batch, 'STREAMS', st, '>')
            es = [(e[0], e[1][1]) for e in rep[0][1]]
            if name == 'base':
                for e, j in es: r.send('EVALSHA', sha['START'], 2, 'q:job:{t}:' + j, st, e, grp, 'c1', 'o' + e)
                for _ in es: r.read()
            else:
                ks = [st] + ['q:job:{t}:' + j for _, j in es]
                a = [grp, 'c1'] + [x for e, _ in es for x in (e, 'o' + e)]
                r.call('EVALSHA', sha['START'], len(ks), *ks, *a)
            for e, j in es: entries[j] = e
            got += len(es)
    def complete():
        for i0 in range(0, n, batch):
            js = [ids[i] for i in range(i0, min(n, i0 + batch))]
            if name == 'base':
                for j in js: r.send('EVALSHA', sha['COMPLETE'], 2, 'q:job:{t}:' + j, st, entries[j], grp, '', 'c1', 604800, '')
                for _ in js: r.read()
            else:
                ks = [k for j in js for k in ('q:job:{t}:' + j, st)]
                a = [grp, 'c1', 604800] + [x for j in js for x in (entries[j], '', '', 0)]
                r.call('EVALSHA', sha['COMPLETE'], len(ks), *ks, *a)
    phase('ENQUEUE', enq)
    if name == 'fused':
        return fused()
    phase('START', start); phase('COMPLETE', complete)
    h = r.call('HGET', 'q:job:{t}:' + ids[0], 'state'); assert h == 'succeeded', h
    assert r.call('XLEN', st) == 0
    return res

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--jobs', type=int, default=5000, help='jobs per case (default 5000)')
    ap.add_argument('--base', default='5cbddf0', help='git revision whose one-job-per-call scripts are the baseline (default 5cbddf0, before batching)')
    ap.add_argument('--batched', default='830aa34', help='git revision of the batched, unfused scripts (default 830aa34)')
    ap.add_argument('--fused', default='f682a93', help='git revision of the fused scripts before the lighter records (default f682a93: history re-encoded at COMPLETE)')
    args = ap.parse_args()
    if args.jobs < 1:
        sys.exit('--jobs must be at least 1')
    if not shutil.which('redis-server'):
        sys.exit('redis-server not found (apt package redis-server)')
    old, batched, fused, new = scripts(args.base), scripts(args.batched), scripts(args.fused), scripts(None)
    d = tempfile.mkdtemp(prefix='queue-profile-')
    port = free_port()
    srv = subprocess.Popen(['redis-server', '--port', str(port), '--dir', d, '--save', '',
                            '--appendonly', 'no', '--bind', '127.0.0.1'], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                R(port).call('PING'); break
            except OSError:
                time.sleep(0.05)
        print('%-5s %-5s %-9s %7s %13s %16s  %s' % ('code', 'batch', 'script', 'calls', 'script us/job', 'redis cpu us/job', 'commands run inside, per job'))
        for label, name, src, batch in (('base', 'base', old, 1), ('batch', 'batch', batched, 8),
                                        ('batch', 'batch', batched, 32), ('fused', 'fused', fused, 1),
                                        ('fused', 'fused', fused, 8), ('fused', 'fused', fused, 32),
                                        ('light', 'fused', new, 1), ('light', 'fused', new, 8),
                                        ('light', 'fused', new, 32)):
            res = run(name, src, port, args.jobs, batch)
            for k, (calls, us, c, inner) in res.items():
                print('%-5s %-5d %-9s %7d %13.1f %16.1f  %s' % (label, batch, k, calls, us, c, ' '.join('%s=%.1f' % (a, b / args.jobs) for a, b in sorted(inner.items()))))
            print('%-5s %-5d %-9s %7s %13.1f %16.1f' % (label, batch, 'total', '', sum(v[1] for v in res.values()), sum(v[2] for v in res.values())))
    finally:
        srv.terminate(); srv.wait()
        shutil.rmtree(d, ignore_errors=True)

if __name__ == '__main__':
    main()
