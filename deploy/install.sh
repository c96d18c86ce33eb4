#!/bin/sh
# Install sanduan on a Debian station gateway or county centre. See docs/deploy.md.
#
#   deploy/install.sh --role edge                  a station gateway: the edge agent
#   deploy/install.sh --role central               a county centre: the collector and (where
#                                                  Mosquitto is) the broker's files
#   deploy/install.sh --role broker                only the broker's files (a broker host)
#
# Options:
#   --role ROLE        edge, central or broker; give it more than once for several roles
#   --source PATH      the sanduan wheel or source directory to install (default: the source
#                      tree this script is in)
#   --prefix DIR       the virtual environment (default: /opt/sanduan)
#   --python PYTHON    the Python (3.11 or later) that makes it (default: python3)
#   --no-pip           do not make the virtual environment nor install sanduan into it
#   --root DIR         write everything under DIR instead of / (packaging, tests): no user,
#                      no ownership changes, no systemctl
#
# Run it again at any time, for an upgrade with the new wheel: it never overwrites a
# configuration file or the broker's files; it replaces the units (local changes belong in
# drop-ins: systemctl edit sanduan-edge) and upgrades sanduan in the virtual environment.
set -eu

KIT=$(cd "$(dirname "$0")" && pwd)
SOURCE=$(dirname "$KIT")
ROOT=
PREFIX=/opt/sanduan
PYTHON=python3
PIP=yes
ROLES=

die() {
    echo "install.sh: $*" >&2
    exit 2
}

say() {
    echo "install.sh: $*"
}

while [ $# -gt 0 ]; do
    case $1 in
        --role)
            [ $# -ge 2 ] || die "--role needs edge, central or broker"
            case $2 in
                edge | central | broker) ROLES="$ROLES $2" ;;
                *) die "unknown role '$2' (edge, central or broker)" ;;
            esac
            shift 2
            ;;
        --source)
            [ $# -ge 2 ] || die "--source needs a wheel or a source directory"
            SOURCE=$2
            shift 2
            ;;
        --prefix)
            [ $# -ge 2 ] || die "--prefix needs a directory"
            PREFIX=$2
            shift 2
            ;;
        --python)
            [ $# -ge 2 ] || die "--python needs a Python executable"
            PYTHON=$2
            shift 2
            ;;
        --root)
            [ $# -ge 2 ] || die "--root needs a directory"
            mkdir -p "$2"
            ROOT=$(cd "$2" && pwd)
            shift 2
            ;;
        --no-pip)
            PIP=no
            shift
            ;;
        -h | --help)
            sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
[ -n "$ROLES" ] || die "give --role edge, --role central or --role broker (see --help)"

has_role() {
    case " $ROLES " in
        *" $1 "*) return 0 ;;
        *) return 1 ;;
    esac
}

# A centre runs the broker next to the collector (central.example.toml connects to 127.0.0.1):
# its files are installed too where Mosquitto is.
BROKER_ASKED=no
if has_role broker; then BROKER_ASKED=yes; fi
if has_role central; then ROLES="$ROLES broker"; fi

if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
    die "run as root (or with --root DIR to write into DIR)"
fi

# install_file SRC DEST MODE: copy, replacing DEST.
install_file() {
    mkdir -p "$(dirname "$2")"
    cp "$1" "$2.tmp.$$"
    chmod "$3" "$2.tmp.$$"
    mv -f "$2.tmp.$$" "$2"
}

# install_new SRC DEST MODE: copy only when DEST does not exist yet (an operator's file stays).
install_new() {
    if [ -e "$2" ]; then
        if cmp -s "$1" "$2"; then :; else say "kept $2 (differs from $1)"; fi
        return 0
    fi
    install_file "$1" "$2" "$3"
    say "wrote $2"
}

# owned OWNER PATH...: change the owner (not under --root, where the users do not exist).
owned() {
    owner=$1
    shift
    if [ -z "$ROOT" ]; then chown "$owner" "$@"; fi
}

ETC=$ROOT/etc/sanduan
UNITS=$ROOT/etc/systemd/system

# 1. The system user and group "sanduan" (the units run as it).
if has_role edge || has_role central; then
    if [ -n "$ROOT" ]; then
        say "--root: not creating the user sanduan"
    else
        if ! getent group sanduan >/dev/null; then
            groupadd --system sanduan
            say "created the group sanduan"
        fi
        if ! getent passwd sanduan >/dev/null; then
            useradd --system --gid sanduan --home-dir /var/lib/sanduan --no-create-home \
                --shell /usr/sbin/nologin --comment "sanduan services" sanduan
            say "created the user sanduan"
        fi
    fi

    # 2. Directories. systemd also makes /var/lib/sanduan and /var/cache/sanduan at start
    # (StateDirectory=, CacheDirectory=); logs go to the journal (journalctl -u 'sanduan-*').
    mkdir -p "$ETC" "$ROOT/var/lib/sanduan" "$ROOT/var/cache/sanduan"
    chmod 0755 "$ETC"
    # The agent's push-config (docs/commands.md) replaces station.toml in place: the group
    # sanduan may write the directory on a gateway.
    if has_role edge; then chmod 0775 "$ETC"; fi
    chmod 0750 "$ROOT/var/lib/sanduan" "$ROOT/var/cache/sanduan"
    owned root:sanduan "$ETC"
    owned sanduan:sanduan "$ROOT/var/lib/sanduan" "$ROOT/var/cache/sanduan"

    # 3. The virtual environment with sanduan and the extras of the roles.
    extras=
    if has_role edge; then extras=edge; fi
    if has_role central; then extras=${extras:+$extras,}central; fi
    if [ "$PIP" = yes ]; then
        [ -e "$SOURCE" ] || die "no wheel or source directory at $SOURCE (give --source)"
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
            die "$PYTHON is older than 3.11"
        if [ ! -x "$ROOT$PREFIX/bin/pip" ]; then
            "$PYTHON" -m venv "$ROOT$PREFIX" ||
                die "cannot make a virtual environment: apt-get install python3-venv"
        fi
        "$ROOT$PREFIX/bin/pip" install --quiet --upgrade pip
        "$ROOT$PREFIX/bin/pip" install --quiet "$SOURCE[$extras]"
        if has_role edge; then
            # The agent runs with PYTHONOPTIMIZE=2 (sanduan-edge.service) from a read-only tree:
            # its byte code is compiled now, the environment's and, unless packaging under
            # --root, the standard library's, which the service could not write.
            "$ROOT$PREFIX/bin/python" -OO -m compileall -q -j 0 "$ROOT$PREFIX/lib" >/dev/null ||
                say "could not compile $PREFIX for PYTHONOPTIMIZE=2; the agent compiles at each start"
            if [ -z "$ROOT" ]; then
                stdlib=$("$ROOT$PREFIX/bin/python" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
                "$ROOT$PREFIX/bin/python" -OO -m compileall -q -j 0 \
                    -x '/(test|tests|idle_test|lib2to3)/' "$stdlib" >/dev/null 2>&1 ||
                    say "could not compile all of $stdlib for PYTHONOPTIMIZE=2 (the rest compiles at each start)"
            fi
        fi
        version=$("$ROOT$PREFIX/bin/sanduan" --version 2>/dev/null || echo sanduan)
        say "installed $version into $PREFIX"
    else
        say "--no-pip: not installing sanduan into $PREFIX"
    fi
    # The units' Documentation=.
    if [ -f "$KIT/../docs/deploy.md" ]; then
        install_file "$KIT/../docs/deploy.md" "$ROOT$PREFIX/share/doc/deploy.md" 0644
    fi
fi

# 4. Example configurations, only where there is none yet; readable by the group sanduan.
if has_role edge; then
    install_new "$KIT/station.example.toml" "$ETC/station.toml" 0640
    owned root:sanduan "$ETC/station.toml"
    install_file "$KIT/systemd/sanduan-edge.service" "$UNITS/sanduan-edge.service" 0644
    say "wrote $UNITS/sanduan-edge.service"
fi
if has_role central; then
    if [ ! -e "$ETC/central.toml" ]; then
        # The example's county and rules files are installed as county.toml and rules.toml.
        sed -e 's/"county\.example\.toml"/"county.toml"/' \
            -e 's/"rules\.example\.toml"/"rules.toml"/' \
            "$KIT/central.example.toml" >"$ETC/.central.toml.$$"
        install_new "$ETC/.central.toml.$$" "$ETC/central.toml" 0640
        rm -f "$ETC/.central.toml.$$"
    else
        say "kept $ETC/central.toml"
    fi
    install_new "$KIT/county.example.toml" "$ETC/county.toml" 0640
    install_new "$KIT/rules.example.toml" "$ETC/rules.toml" 0640
    owned root:sanduan "$ETC/central.toml" "$ETC/county.toml" "$ETC/rules.toml"
    install_file "$KIT/systemd/sanduan-central@.service" "$UNITS/sanduan-central@.service" 0644
    say "wrote $UNITS/sanduan-central@.service"
fi

# 5. The broker's files: Debian's mosquitto reads /etc/mosquitto/conf.d/*.conf.
if has_role broker && [ -z "$ROOT" ] && ! command -v mosquitto >/dev/null; then
    if [ "$BROKER_ASKED" = yes ]; then
        die "Mosquitto is not installed: apt-get install mosquitto, then run this again"
    fi
    say "Mosquitto is not installed here: not installing the broker's files"
    ROLES=$(echo "$ROLES" | sed 's/ broker//g')
fi
if has_role broker; then
    install_new "$KIT/mosquitto/sanduan.conf" "$ROOT/etc/mosquitto/conf.d/sanduan.conf" 0644
    install_new "$KIT/mosquitto/sanduan.acl" "$ROOT/etc/mosquitto/sanduan.acl" 0600
    owned mosquitto: "$ROOT/etc/mosquitto/sanduan.acl"
fi

# 6. systemd picks up the units; nothing is started before its secrets are in place.
if [ -z "$ROOT" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi

say "done. Next (docs/deploy.md):"
if has_role edge; then
    say "  edit /etc/sanduan/station.toml; put the station's MQTT password in"
    say "  /etc/sanduan/mqtt-password (root only, mode 0600) and the CA in /etc/sanduan/ca.pem;"
    say "  $PREFIX/bin/sanduan edge check-config /etc/sanduan/station.toml;"
    say "  systemctl enable --now sanduan-edge"
fi
if has_role central; then
    say "  edit /etc/sanduan/central.toml; for each collector N put its MQTT password in"
    say "  /etc/sanduan/central-N.password (root only, mode 0600);"
    say "  runuser -u sanduan -- $PREFIX/bin/sanduan central migrate \\"
    say "      --config /etc/sanduan/central.toml;"
    say "  systemctl enable --now sanduan-central@1"
fi
if has_role broker; then
    say "  the broker's passwords and certificates: see /etc/mosquitto/conf.d/sanduan.conf;"
    say "  systemctl restart mosquitto"
fi
