#!/usr/bin/env bash
# make demo: the whole job on this machine, end to end.
#
#   1. a Docker engine and the local systemd images (nothing is pulled)
#   2. the demo fleet: HO and three stores as systemd containers (network psync-demo)
#   3. HO deployed (catalog, SeaweedFS S3, sync API, and the nginx gateway with TLS: a private
#      CA and the gateway's certificate are made here, in build/demo-secrets/tls), sample JPEGs
#      generated here and imported
#   4. ansible-playbook -i inventories/demo playbooks/rollout.yml: every store given the CA,
#      migrated, agent and timers installed, first sync through https://psync-ho (the gateway)
#   5. the fleet summary, and one photo read back from a store's database, checksum verified
#
# Re-running it reuses what is there (containers, images, secrets) and converges again.
# scripts/demo-down.sh removes the containers. Needs root (Docker).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
out="$root/build/demo"
photos="$out/photos"
network=psync-demo
image="${FLEET_IMAGE:-photo-sync/systemd-fleet:bookworm}"
ho=psync-ho
stores=(psync-store1 psync-store2 psync-store3)
export PATH="$root/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$root/ansible.cfg" ANSIBLE_DISPLAY_SKIPPED_HOSTS=false
start=$SECONDS

step() { printf '\n\033[1m==> %s\033[0m (%ss)\n' "$*" "$((SECONDS - start))"; }

if [ ! -x .venv/bin/ansible-playbook ]; then
    step "Installing the project venv"
    scripts/bootstrap.sh test,fleet
fi

step "Docker engine and the local systemd images"
scripts/base-image.sh

step "The demo fleet: $ho ${stores[*]}"
docker network inspect "$network" >/dev/null 2>&1 || docker network create "$network" >/dev/null
for name in "$ho" "${stores[@]}"; do
    state="$(docker inspect --format '{{.State.Status}}' "$name" 2>/dev/null || true)"
    case "$state" in
        running) echo "  $name: running" ;;
        "") docker run -d --name "$name" --hostname "$name" --network "$network" \
                --cap-add SYS_ADMIN --cap-add NET_ADMIN \
                --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
                --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
                --tmpfs /run --tmpfs /run/lock --stop-signal SIGRTMIN+3 \
                --label photo-sync.demo=1 "$image" /lib/systemd/systemd >/dev/null
            echo "  $name: created" ;;
        *) docker start "$name" >/dev/null; echo "  $name: started" ;;
    esac
done
for name in "$ho" "${stores[@]}"; do
    for _ in $(seq 60); do
        s="$(docker exec "$name" systemctl is-system-running 2>/dev/null || true)"
        case "$s" in running|degraded) break ;; esac
        sleep 1
    done
done

step "HO: catalog, S3 server, sync API, gateway (https://$ho)"
ansible-playbook -i inventories/demo playbooks/deploy-ho.yml

step "Sample product photos, generated here and imported at HO"
python scripts/demo-photos.py "$photos" --count 36
ansible-playbook -i inventories/demo playbooks/import-photos.yml -e "photo_dir=$photos"

step "Rollout: ansible-playbook -i inventories/demo playbooks/rollout.yml"
ansible-playbook -i inventories/demo playbooks/rollout.yml -e "photo_sync_summary_file=$out/fleet-summary.txt"

step "Fleet summary"
cat "$out/fleet-summary.txt"

step "One photo read back from ${stores[1]}'s database"
row="$(docker exec "${stores[1]}" runuser -u postgres -- psql -XAtq -d edge -F ' ' -c \
    "SELECT id, filename, checksum FROM product_photo WHERE sync_status = 'synced' ORDER BY filename LIMIT 1")"
read -r photo_id filename checksum <<<"$row"
docker exec "${stores[1]}" runuser -u postgres -- psql -XAtq -d edge -c \
    "SELECT encode(image_binary, 'hex') FROM product_photo WHERE id = '$photo_id'" \
    | python -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.stdin.read().strip()))' \
    > "$out/$filename"
got="$(md5sum "$out/$filename" | cut -d' ' -f1)"
if [ "$got" != "$checksum" ] || ! cmp -s "$out/$filename" "$photos/$filename"; then
    echo "MISMATCH: $out/$filename has MD5 $got, the store's checksum says $checksum" >&2
    exit 1
fi
echo "  $out/$filename ($(stat -c %s "$out/$filename") bytes)"
echo "  MD5 $got matches the store's checksum and the original in $photos"

step "Done in $((SECONDS - start))s. Try next"
cat <<NEXT
  ansible-playbook -i inventories/demo playbooks/status.yml                    # lag, counts, bytes per store
  ansible-playbook -i inventories/demo playbooks/resync.yml -e mode=full       # every store, full run
  ansible-playbook -i inventories/demo playbooks/resync.yml --limit psync-store2
  python scripts/demo-photos.py build/demo/more --start 101 --count 5 &&
    ansible-playbook -i inventories/demo playbooks/import-photos.yml -e photo_dir=build/demo/more
  docker exec psync-store1 systemctl list-timers 'photo-sync*'                 # the schedule
  docker exec psync-store1 python3 -c "import ssl, urllib.request; print(urllib.request.urlopen(
    'https://psync-ho/api/v1/health/', context=ssl.create_default_context(
    cafile='/etc/ssl/photo-sync-ho-ca.pem')).read().decode())"              # HO through the gateway
  docker exec psync-ho tail -3 /var/log/nginx/access.log                      # the gateway's JSON log
  docker exec psync-store1 systemctl start photo-sync-edge@incremental          # what the timer runs
  ansible-playbook -i inventories/demo playbooks/rollout.yml --check --diff     # nothing to change
  ansible-playbook -i inventories/demo playbooks/rollback.yml                   # asks first
  scripts/demo-down.sh                                                          # remove the demo fleet
(run them from $root with the venv on PATH: export PATH=\$PWD/.venv/bin:\$PATH)
NEXT
