#!/usr/bin/env bash
# Prepare the real-server tier (tests/test_real_mta.py): Debian's Postfix, Exim and OpenSMTPD,
# downloaded and extracted into DIR (nothing installed, no service started), and the system
# users they drop to. Root only; Debian or Ubuntu with apt. Usage: setup.sh DIR
# Then: export REAL_MTA_ROOT=DIR
set -euo pipefail
root=${1:?usage: setup.sh DIR}
if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (the servers start as root and need their system users)" >&2
    exit 2
fi
packages=(postfix exim4-base exim4-config exim4-daemon-light libidn12 opensmtpd)

mkdir -p "$root/.debs"
getent passwd _apt >/dev/null && chown _apt "$root/.debs"  # apt downloads as _apt
if [ ! -e "$root/packages.txt" ]; then
    apt-get update -qq
    command -v openssl >/dev/null || apt-get install -y -qq openssl >/dev/null
    (cd "$root/.debs" && apt-get download -qq "${packages[@]}")
    for deb in "$root"/.debs/*.deb; do
        dpkg-deb -x "$deb" "$root"
        dpkg-deb --show --showformat='${Package} ${Version}\n' "$deb" >>"$root/packages.tmp"
    done
    mv "$root/packages.tmp" "$root/packages.txt"
fi

# The users and groups the packages' maintainer scripts would create.
getent group postdrop >/dev/null || groupadd --system postdrop
for user in postfix Debian-exim opensmtpd opensmtpq; do
    getent passwd "$user" >/dev/null ||
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$user"
done
echo "real mail servers ready in $root: $(paste -sd, "$root/packages.txt")"
