#!/bin/bash
# First start of docker-compose.secure.yml (run as root in the Kafka image, which has openssl): a private
# CA, the certificates of the broker and of the registry proxy, and a random password per principal, each
# written into the volume of the one service that needs it. Later starts change nothing; `down -v` removes
# it all. Nothing here is ever committed or baked into an image.
#
#   /pki        the CA's key and every certificate (this service only)
#   /ca         ca.crt, the public CA certificate (every service)
#   /kafka      the broker's key and certificate (kafka.pem) and the SCRAM passwords it creates users with
#   /admin      the admin's password (the ACL step)
#   /connector, /candles, /consumer   each one's Kafka password and the registry's user:password
#   /proxy      the registry proxy's key, certificate and htpasswd
set -euo pipefail
umask 077

if [ -e /pki/done ]; then
  echo "secrets exist (docker compose -f docker-compose.secure.yml down -v makes new ones)"
  exit 0
fi
certs=/opt/kafka/bin/kite-certs.sh
$certs /pki kafka "DNS:kafka,DNS:localhost,IP:127.0.0.1"
$certs /pki registry-proxy "DNS:registry-proxy,DNS:localhost,IP:127.0.0.1"
install -m 0644 /pki/ca.crt /ca/ca.crt

password() { openssl rand -hex 24; }
put() { # put FILE OWNER TEXT: the file written with only its owner able to read it
  printf '%s\n' "$3" >"$1"
  chown "$2" "$1"
  chmod 0400 "$1"
}
kafka_uid=1000 connector_uid=10001 proxy_uid=33  # the users the images run as (appuser, connector, www-data)

install -o "$kafka_uid" -m 0400 /pki/kafka.pem /kafka/kafka.pem
for user in admin connector candles consumer; do
  secret="$(password)"
  put "/kafka/$user.password" "$kafka_uid" "$secret"
  case "$user" in
    admin) put /admin/kafka.password "$connector_uid" "$secret" ;;
    *) put "/$user/kafka.password" "$connector_uid" "$secret" ;;
  esac
done

registry="$(password)"
for user in connector candles consumer; do
  put "/$user/registry.userinfo" "$connector_uid" "kite:$registry"
done
put /proxy/htpasswd "$proxy_uid" "kite:$(printf '%s' "$registry" | openssl passwd -6 -stdin)"
install -m 0444 /pki/registry-proxy.crt /proxy/registry-proxy.crt
install -m 0400 /pki/registry-proxy.key /proxy/registry-proxy.key  # read by nginx's master, as root

chown "$kafka_uid" /kafka
chown "$connector_uid" /admin /connector /candles /consumer
touch /pki/done
echo "secrets made: a CA, certificates for kafka and registry-proxy, a password per principal"
