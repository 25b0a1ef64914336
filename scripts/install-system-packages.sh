#!/bin/sh
# Install the Debian packages the integration tests need, without starting any system service.
# Idempotent: does nothing when everything is installed. Needs root (or sudo) when it installs.
set -e
PACKAGES="postfix dovecot-core dovecot-pop3d dovecot-imapd dovecot-lmtpd clamav-daemon clamdscan clamav-testfiles
spamassassin spamd spamc rspamd nsd rbldnsd dnsmasq-base bind9-dnsutils swaks rsyslog strace chromium
postgresql-15"
missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing Debian packages:$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "need root to install:$missing" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
# Without systemd, maintainer scripts would start services (a port-25 Postfix): forbid that.
if [ ! -x /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null && $SUDO chmod +x /usr/sbin/policy-rc.d
fi
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
echo "postfix postfix/mailname string mta.example.test" | $SUDO debconf-set-selections
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
# spamassassin's postinst leaves a gpg-agent running
$SUDO gpgconf --homedir /var/lib/spamassassin/sa-update-keys --kill gpg-agent 2>/dev/null || true
