# piflash-bootstrap: make a NixOS host use the bootstrap files piflash injects into its SD card,
# and refuse to boot half-configured when they are missing.
#
# piflash writes, before first boot (see hosts/example.toml):
#   /var/lib/bootstrap/ssh_host_ed25519_key        (0600)  the pinned SSH host key
#   /var/lib/bootstrap/ssh_host_ed25519_key.pub    (0644)
#   /var/lib/networkmanager/system-connections.env (0600)  WIFI_SSID="…" and WIFI_PSK="…"
# They live under /var/lib because NixOS regenerates /etc on activation. The env file comes from
# the host file's `env = { WIFI_SSID = "wifi_ssid", WIFI_PSK = "wifi_psk" }`: piflash quotes each
# value so that systemd's EnvironmentFile= yields exactly the secret's bytes.
#
# Usage, in the host's configuration:
#   imports = [ ./hosts/nixos/piflash-bootstrap.nix ];
#   services.piflash-bootstrap.enable = true;
#   # services.piflash-bootstrap.wifi.backend = "wpa_supplicant";   # for networking.wireless
#   # services.piflash-bootstrap.wifi.ssid = "Home Net";              # …which needs the name
#
# Choices, read against nixpkgs' own modules:
#
# * sshd.nix: `services.openssh.hostKeys` lists the pinned key. Its `sshd-keygen.service` runs
#   when any listed key is missing or empty (ConditionFileNotEmpty=|!path) and then quietly
#   GENERATES a random key at that path — a host nobody can trust. So: `generateHostKeys = false`
#   where nixpkgs has that option (it removes sshd-keygen), and in every case sshd-keygen and
#   sshd require `piflash-bootstrap-check.service`, ordered before them: a missing key fails
#   the check, loudly, and nothing is generated.
# * networkmanager.nix: `ensureProfiles` renders each profile to an INI file, substitutes `$VAR`
#   with envsubst from `ensureProfiles.environmentFiles` (loaded by systemd's EnvironmentFile=),
#   and NetworkManager reads the result with GLib's keyfile parser. GLib strips leading spaces
#   and interprets backslashes (`\s`, `\\`, …), so a raw passphrase is mangled there. We do not
#   point environmentFiles at the injected file: the check unit reads it (EnvironmentFile=, the
#   exact layer) and writes /run/piflash-bootstrap/networkmanager.env with the values encoded
#   for the keyfile layer — the PSK with `\` → `\\` and space → `\s`, the SSID as NetworkManager's
#   byte list (`83;115;…;`, exact for any bytes) — each quoted again for EnvironmentFile=. Every
#   valid WPA passphrase then reaches NetworkManager exactly. (`ensureProfiles.secrets` with
#   nm-file-secret-agent would avoid the keyfile layer for the PSK, but it exists only in recent
#   nixpkgs, needs an agent on D-Bus, and the SSID would still go through the keyfile.)
#   A missing env file would make NetworkManager-ensure-profiles fail and write none of its
#   profiles, and a missing variable would give an empty `psk=`: the check unit refuses both,
#   with a message, before ensure-profiles runs (which requires it).
# * wpa_supplicant.nix: `networking.wireless.secretsFile` is read by wpa_supplicant's "file"
#   ext_password backend, which takes `name=value` lines but trims trailing whitespace and cuts
#   at `#`. The check unit therefore writes the raw 256-bit PSK (64 hex digits, from
#   `wpa_passphrase`, fed the passphrase on stdin) as `piflash_wifi_psk=…`, referenced by
#   `pskRaw = "ext:piflash_wifi_psk"` — exact for every passphrase. The network's name is the
#   attribute name of `networking.wireless.networks`, fixed at build time, so this backend needs
#   `wifi.ssid`; the check unit fails when the card's WIFI_SSID differs from it.
# * NetworkManager and networking.wireless cannot both run (networkmanager.nix asserts so, without
#   naming piflash): with the networkmanager backend this module asserts first, naming itself.
# * sops-nix (`sops.age.sshKeyPaths`) and agenix (`age.identityPaths`) derive their age identity
#   from an SSH host key; when those modules are imported, they are pointed at the pinned key
#   explicitly rather than at a default list that may name keys that do not exist.
{ config, lib, options, pkgs, ... }:

let
  cfg = config.services.piflash-bootstrap;
  hostKey = "${cfg.directory}/ssh_host_ed25519_key";
  runtimeDir = cfg.runtimeDirectory;
  nmEnvironment = "${runtimeDir}/networkmanager.env";
  wpaSecrets = "${runtimeDir}/wpa_supplicant-secrets";
  wifiUnits =
    if cfg.wifi.backend == "networkmanager" then
      [ "NetworkManager-ensure-profiles.service" ]
    else if config.networking.wireless.interfaces == [ ] then
      [ "wpa_supplicant.service" ]
    else
      map (i: "wpa_supplicant-${i}.service") config.networking.wireless.interfaces;
  hasOption = path: lib.hasAttrByPath path options;
  # nixpkgs with `services.openssh.generateHostKeys` has no sshd-keygen unit once it is false.
  keygenUnits = lib.optional (!hasOption [ "services" "openssh" "generateHostKeys" ]) "sshd-keygen.service";
  # The units that must not start unless the check passed (Requires= + After=).
  # sshd.nix runs `sshd@` instances behind `sshd.socket` with startWhenNeeded, else `sshd`.
  sshdUnit = if config.services.openssh.startWhenNeeded or false then "sshd@.service" else "sshd.service";
  checkedUnits = keygenUnits ++ [ sshdUnit ] ++ lib.optionals cfg.wifi.enable wifiUnits;

  # The check, as a bash script: every failure names the file and what is wrong, on the journal and
  # the console (StandardError=journal+console), and exits non-zero so the units that require it
  # do not start.
  checkScript = ''
    set -u
    export LC_ALL=C
    fail() {
      echo "piflash-bootstrap: FAILED: $*" >&2
      echo "piflash-bootstrap: this card was not provisioned by piflash for this host (run: piflash flash HOST)" >&2
      exit 1
    }
    key=${lib.escapeShellArg hostKey}
    [ -e "$key" ] || fail "the pinned SSH host key $key is missing; refusing to let sshd-keygen generate a random one"
    [ -s "$key" ] || fail "the pinned SSH host key $key is empty"
    fingerprint=$(ssh-keygen -l -f "$key" 2>&1) || fail "the pinned SSH host key $key is not a readable OpenSSH key: $fingerprint"
    if [ -e "$key.pub" ]; then
      derived=$(ssh-keygen -y -f "$key" | cut -d' ' -f1-2) || fail "cannot derive the public key of $key"
      stored=$(cut -d' ' -f1-2 "$key.pub")
      [ "$derived" = "$stored" ] || fail "$key.pub does not match $key"
    fi
    echo "piflash-bootstrap: SSH host key $fingerprint"
  '' + lib.optionalString cfg.wifi.enable (''
    env=${lib.escapeShellArg cfg.wifi.environmentFile}
    [ -e "$env" ] || fail "the Wi-Fi environment file $env is missing"
    [ -n "''${WIFI_SSID-}" ] || fail "$env has no WIFI_SSID (or it is empty)"
    [ -n "''${WIFI_PSK-}" ] || fail "$env has no WIFI_PSK (or it is empty)"
    [ ''${#WIFI_SSID} -le 32 ] || fail "WIFI_SSID in $env has ''${#WIFI_SSID} bytes; a Wi-Fi network name has 1-32"
    if [ ''${#WIFI_PSK} -eq 64 ]; then
      case "$WIFI_PSK" in *[!0-9a-fA-F]*) fail "WIFI_PSK in $env has 64 characters but is not 64 hex digits";; esac
    else
      [ ''${#WIFI_PSK} -ge 8 ] && [ ''${#WIFI_PSK} -le 63 ] || fail "WIFI_PSK in $env has ''${#WIFI_PSK} characters; a Wi-Fi passphrase has 8-63"
      case "$WIFI_PSK" in *[![:print:]]*) fail "WIFI_PSK in $env holds a character that is not printable ASCII";; esac
    fi
    umask 077
    mkdir -p ${runtimeDir}
  '' + (if cfg.wifi.backend == "networkmanager" then ''
    # For systemd's EnvironmentFile=: double quotes, backslash before \ " $ and `.
    systemd_quote() {
      local v=$1
      v=''${v//'\'/'\\'}; v=''${v//'"'/'\"'}; v=''${v//'$'/'\$'}; v=''${v//'`'/'\`'}
      printf '"%s"' "$v"
    }
    # For GLib's keyfile strings: backslash doubled, spaces as \s (GLib drops leading spaces).
    keyfile_string() {
      local v=$1
      v=''${v//'\'/'\\'}; v=''${v//' '/'\s'}
      printf '%s' "$v"
    }
    # NetworkManager's keyfile byte list for an SSID: exact for any bytes.
    ssid_bytes=""
    for byte in $(printf '%s' "$WIFI_SSID" | od -An -v -tu1); do ssid_bytes="$ssid_bytes$byte;"; done
    {
      printf 'PIFLASH_WIFI_SSID=%s\n' "$(systemd_quote "$ssid_bytes")"
      printf 'PIFLASH_WIFI_PSK=%s\n' "$(systemd_quote "$(keyfile_string "$WIFI_PSK")")"
    } > ${nmEnvironment}.new
    mv ${nmEnvironment}.new ${nmEnvironment}
    echo "piflash-bootstrap: Wi-Fi network name and passphrase checked; NetworkManager profile ${cfg.wifi.profileName}"
  '' else ''
    expected=${lib.escapeShellArg (if cfg.wifi.ssid == null then "" else cfg.wifi.ssid)}
    [ "$WIFI_SSID" = "$expected" ] || fail "WIFI_SSID in $env is not the network this configuration joins (services.piflash-bootstrap.wifi.ssid = \"$expected\")"
    if [ ''${#WIFI_PSK} -eq 64 ]; then
      raw=$WIFI_PSK
    else
      raw=$(printf '%s\n' "$WIFI_PSK" | wpa_passphrase "$WIFI_SSID" | sed -n 's/^[[:space:]]*psk=\([0-9a-f]\{64\}\)$/\1/p')
      [ ''${#raw} -eq 64 ] || fail "wpa_passphrase could not derive the WPA key from WIFI_PSK"
    fi
    printf 'piflash_wifi_psk=%s\n' "$raw" > ${wpaSecrets}.new
    mv ${wpaSecrets}.new ${wpaSecrets}
    echo "piflash-bootstrap: Wi-Fi network name and passphrase checked; wpa_supplicant network \"$WIFI_SSID\""
  ''));
in
{
  options.services.piflash-bootstrap = {
    enable = lib.mkEnableOption "the bootstrap files injected by piflash (SSH host key, Wi-Fi credentials)";

    directory = lib.mkOption {
      type = lib.types.str;
      default = "/var/lib/bootstrap";
      description = "Folder holding the injected SSH host key (kept 0700, root-owned).";
    };

    runtimeDirectory = lib.mkOption {
      type = lib.types.str;
      default = "/run/piflash-bootstrap";
      internal = true;
      description = "Where the check unit writes the Wi-Fi values encoded for NetworkManager or wpa_supplicant (0700).";
    };

    wifi = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = ''
          Join the Wi-Fi network named by the WIFI_SSID and WIFI_PSK variables of the injected
          environment file (WPA-PSK, automatically at boot).
        '';
      };

      backend = lib.mkOption {
        type = lib.types.enum [ "networkmanager" "wpa_supplicant" ];
        default = "networkmanager";
        description = ''
          Who joins the network: NetworkManager (`networking.networkmanager.ensureProfiles`), or
          wpa_supplicant (`networking.wireless`, with the PSK through its `secretsFile` and an
          `ext:` reference). The two cannot run together.
        '';
      };

      ssid = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = ''
          The network's name, for the wpa_supplicant backend, which takes it at build time (the
          attribute name of `networking.wireless.networks`). The check unit fails when the
          card's WIFI_SSID differs. Unused by the networkmanager backend, which takes it from the
          card.
        '';
      };

      environmentFile = lib.mkOption {
        type = lib.types.str;
        default = "/var/lib/networkmanager/system-connections.env";
        description = "The injected `KEY=\"value\"` file (systemd EnvironmentFile= syntax).";
      };

      profileName = lib.mkOption {
        type = lib.types.str;
        default = "piflash-wifi";
        description = "Name (connection id) of the NetworkManager profile.";
      };
    };
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      assertions = [
        {
          assertion = !(cfg.wifi.enable && cfg.wifi.backend == "networkmanager" && config.networking.wireless.enable);
          message = ''
            piflash-bootstrap: services.piflash-bootstrap.wifi.backend is "networkmanager" but
            networking.wireless (wpa_supplicant) is enabled too, and NetworkManager cannot run
            beside it. Set services.piflash-bootstrap.wifi.backend = "wpa_supplicant" to join the
            card's Wi-Fi network through networking.wireless, or disable networking.wireless.
          '';
        }
        {
          assertion = !(cfg.wifi.enable && cfg.wifi.backend == "wpa_supplicant" && cfg.wifi.ssid == null);
          message = ''
            piflash-bootstrap: services.piflash-bootstrap.wifi.backend = "wpa_supplicant" needs
            services.piflash-bootstrap.wifi.ssid: networking.wireless takes the network's name at
            build time (only the passphrase can come from the card, through secretsFile).
          '';
        }
      ];

      services.openssh.enable = lib.mkDefault true;
      services.openssh.hostKeys = [
        {
          path = hostKey;
          type = "ed25519";
        }
      ];

      systemd.services = lib.genAttrs (map (lib.removeSuffix ".service") checkedUnits) (_: {
        requires = [ "piflash-bootstrap-check.service" ];
        after = [ "piflash-bootstrap-check.service" ];
      }) // {
        piflash-bootstrap-check = {
          description = "Check the bootstrap files piflash injected (SSH host key, Wi-Fi credentials)";
          wantedBy = [ "multi-user.target" ];
          before = lib.unique ([ "sshd-keygen.service" ] ++ checkedUnits);
          after = [ "systemd-tmpfiles-setup.service" ];
          path = [ pkgs.openssh pkgs.coreutils pkgs.gnused ]
            ++ lib.optional (cfg.wifi.enable && cfg.wifi.backend == "wpa_supplicant") pkgs.wpa_supplicant;
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            # "-": a missing file is reported by the script, by name, rather than by systemd.
            EnvironmentFile = lib.optional cfg.wifi.enable "-${cfg.wifi.environmentFile}";
            StandardOutput = "journal+console";
            StandardError = "journal+console";
          };
          script = checkScript;
        };
      };

      systemd.tmpfiles.rules = [
        "d ${cfg.directory} 0700 root root -"
        "z ${hostKey} 0600 root root -"
        "z ${hostKey}.pub 0644 root root -"
        "d ${runtimeDir} 0700 root root -"
      ] ++ lib.optional cfg.wifi.enable "z ${cfg.wifi.environmentFile} 0600 root root -";
    }

    # Where nixpkgs can stop generating host keys, it must not: the key comes from the card.
    (lib.optionalAttrs (hasOption [ "services" "openssh" "generateHostKeys" ]) {
      services.openssh.generateHostKeys = false;
    })

    (lib.optionalAttrs (hasOption [ "sops" "age" "sshKeyPaths" ]) {
      sops.age.sshKeyPaths = [ hostKey ];
    })

    (lib.optionalAttrs (hasOption [ "age" "identityPaths" ]) {
      age.identityPaths = [ hostKey ];
    })

    (lib.mkIf (cfg.wifi.enable && cfg.wifi.backend == "networkmanager") {
      networking.networkmanager.enable = lib.mkDefault true;
      networking.networkmanager.ensureProfiles.environmentFiles = [ nmEnvironment ];
      networking.networkmanager.ensureProfiles.profiles.${cfg.wifi.profileName} = {
        connection = {
          id = cfg.wifi.profileName;
          type = "wifi";
          autoconnect = true;
        };
        wifi = {
          mode = "infrastructure";
          ssid = "$PIFLASH_WIFI_SSID";
        };
        wifi-security = {
          key-mgmt = "wpa-psk";
          psk = "$PIFLASH_WIFI_PSK";
        };
        ipv4.method = "auto";
        ipv6.method = "auto";
      };
    })

    (lib.mkIf (cfg.wifi.enable && cfg.wifi.backend == "wpa_supplicant" && cfg.wifi.ssid != null) {
      networking.wireless.enable = lib.mkDefault true;
      networking.wireless.secretsFile = wpaSecrets;
      networking.wireless.networks.${cfg.wifi.ssid}.pskRaw = "ext:piflash_wifi_psk";
    })
  ]);
}
