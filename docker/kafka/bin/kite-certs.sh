#!/bin/bash
# A private CA and certificates signed by it, made with openssl only (in the Kafka image, and in any
# Debian image with the openssl package). For a test or demo stack: a real deployment uses its own CA.
#
#   kite-certs.sh DIR NAME [SAN]
#
# Makes DIR/ca.crt and DIR/ca.key once, then, unless they exist, for NAME (the certificate's CN):
#   DIR/NAME.key  private key (PKCS#8, unencrypted, mode 0600)
#   DIR/NAME.crt  certificate for server and client authentication, with subjectAltName SAN when given
#                 (e.g. DNS:kafka,DNS:localhost,IP:127.0.0.1: the names clients dial must be there)
#   DIR/NAME.pem  key + certificate + CA in one file: Kafka's ssl.keystore.type=PEM, nginx's ssl_certificate
# Running it again changes nothing; delete a file to make it anew. KITE_CERT_DAYS sets the validity (825).
set -euo pipefail

dir="${1:?usage: kite-certs.sh DIR NAME [SAN]}"
name="${2:?usage: kite-certs.sh DIR NAME [SAN]}"
san="${3:-}"
days="${KITE_CERT_DAYS:-825}"
[[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "kite-certs.sh: NAME must be letters, digits, '.', '_' or '-'" >&2; exit 2; }
umask 077
mkdir -p "$dir"
chmod a+rx "$dir"  # the certificates are public; each key file is mode 0600
cd "$dir"

if [ ! -s ca.crt ] || [ ! -s ca.key ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=kite-kafka private CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout ca.key -out ca.crt 2>/dev/null
  chmod 0644 ca.crt
  echo "kite-certs.sh: made a CA in $dir/ca.crt"
fi

[ -s "$name.pem" ] && exit 0
extensions="$(mktemp)"
trap 'rm -f "$extensions" "$name.csr"' EXIT
{
  echo "basicConstraints=CA:FALSE"
  echo "keyUsage=critical,digitalSignature,keyEncipherment"
  echo "extendedKeyUsage=serverAuth,clientAuth"
  [ -z "$san" ] || echo "subjectAltName=$san"
} >"$extensions"
openssl req -newkey rsa:2048 -nodes -subj "/CN=$name" -keyout "$name.key" -out "$name.csr" 2>/dev/null
openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
  -days "$days" -extfile "$extensions" -out "$name.crt" 2>/dev/null
chmod 0644 "$name.crt"
cat "$name.key" "$name.crt" ca.crt >"$name.pem"
echo "kite-certs.sh: made $dir/$name.crt${san:+ for $san}"
