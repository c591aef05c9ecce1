#!/bin/bash
# make demo: a fresh 3-host dev cluster, instances created through computectl, a look
# around. Leaves the cluster running; `make down` removes it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$here/.venv/bin:$PATH"
devcluster="$here/deploy/devcluster"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "a fresh cluster: etcd, a scheduler and 3 hosts, each host a network namespace with its agent; mTLS everywhere"
"$devcluster" down >/dev/null
run "$devcluster" up --hosts 3
run "$devcluster" status

say "an anti-affinity group of 3: one instance per host"
run computectl server-group create web --policy anti-affinity
run computectl server create web --flavor m1.tiny --image heartbeat --count 3 --group web --wait

say "a few more: heartbeats and two burn instances (30% duty)"
run computectl server create tick --flavor m1.tiny --image heartbeat --count 3 --wait
run computectl server create burn --flavor m1.small --image burn --append "duty=30" --count 2 --wait

say "on the network: every instance has a fixed IP on the cluster subnet; the net guest answers ping"
run computectl server create netguest --flavor m1.tiny --image net --wait -f value -c name -c ip
ip=$(computectl server show netguest -f value -c ip)
run ping -c 3 -i 0.3 "$ip"

say "mTLS: every hop checks certificates; a reader's may list but not create"
reader=/var/tmp/computed-dev/pki/reader-devcluster
run computectl --os-cert "$reader/cert.pem" --os-key "$reader/key.pem" server list -c name -c status
printf '$ computectl --os-cert %s/cert.pem --os-key %s/key.pem server create nope --flavor m1.tiny --image heartbeat\n' "$reader" "$reader"
computectl --os-cert "$reader/cert.pem" --os-key "$reader/key.pem" server create nope --flavor m1.tiny --image heartbeat || true
run computectl host show host-1 -c host -c cert_expires

sleep 2  # one more stats sample, so CPU figures are not empty
say "what runs where"
run computectl server list
run computectl host list
say "one instance up close: its VMM pid, CPU, memory, its vhost-<pid> worker and the kernel's kvm-pit/<pid>"
run computectl server show burn-1
pid=$(computectl server show burn-1 -f value -c pid)
run ps -o pid,nlwp,rss,args -p "$pid"
printf '$ ps -eLo pid,tid,comm | grep -E "^ *%s |kvm-pit/%s"\n' "$pid" "$pid"
ps -eLo pid,tid,comm | grep -E "^ *$pid |kvm-pit/$pid"
say "its console"
run computectl server console burn-1 --lines 5

cat <<EOT

The cluster is still running. Look around:
  export PATH=$here/.venv/bin:\$PATH      # computectl needs no flags: the scheduler is 127.0.0.1:8774,
                                          # its admin certificate is linked in ~/.config/computed/
  computectl server list | server show NAME | server console NAME | host show host-1
  computectl server stop|start|reboot|pause|resume|delete NAME
  deploy/devcluster status                # logs: /var/tmp/computed-dev/logs/
  ip netns list                           # one namespace per host
Stop it: make down
EOT
