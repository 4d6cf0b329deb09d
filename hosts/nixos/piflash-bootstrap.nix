# piflash-bootstrap: make a NixOS host use the bootstrap files piflash injects into its SD card.
#
# piflash writes, before first boot (see hosts/example.toml):
#   /var/lib/bootstrap/ssh_host_ed25519_key        (0600)  the pinned SSH host key
#   /var/lib/bootstrap/ssh_host_ed25519_key.pub    (0644)
#   /var/lib/networkmanager/system-connections.env (0600)  WIFI_SSID=… and WIFI_PSK=… lines
#
# They live under /var/lib because NixOS regenerates /etc on activation.
#
# Usage, in the host's configuration:
#   imports = [ ./hosts/nixos/piflash-bootstrap.nix ];
#   services.piflash-bootstrap.enable = true;
#
# The environment file is read by systemd (EnvironmentFile=): values are taken literally except
# that quotes and backslashes are interpreted, so avoid backslashes in Wi-Fi passwords or quote
# them in the host file's template.
{ config, lib, ... }:

let
  cfg = config.services.piflash-bootstrap;
in
{
  options.services.piflash-bootstrap = {
    enable = lib.mkEnableOption "the bootstrap files injected by piflash (SSH host key, Wi-Fi credentials)";

    directory = lib.mkOption {
      type = lib.types.str;
      default = "/var/lib/bootstrap";
      description = "Folder holding the injected SSH host key (kept 0700, root-owned).";
    };

    wifi = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = ''
          Create a NetworkManager Wi-Fi profile (WPA-PSK, autoconnect) from the WIFI_SSID and
          WIFI_PSK variables of the injected environment file.
        '';
      };

      environmentFile = lib.mkOption {
        type = lib.types.str;
        default = "/var/lib/networkmanager/system-connections.env";
        description = "The injected KEY=value file read by NetworkManager's ensureProfiles.";
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
      services.openssh.enable = lib.mkDefault true;
      services.openssh.hostKeys = [
        {
          path = "${cfg.directory}/ssh_host_ed25519_key";
          type = "ed25519";
        }
      ];

      systemd.tmpfiles.rules = [
        "d ${cfg.directory} 0700 root root -"
      ];
    }

    (lib.mkIf cfg.wifi.enable {
      networking.networkmanager.enable = lib.mkDefault true;
      networking.networkmanager.ensureProfiles.environmentFiles = [ cfg.wifi.environmentFile ];
      networking.networkmanager.ensureProfiles.profiles.${cfg.wifi.profileName} = {
        connection = {
          id = cfg.wifi.profileName;
          type = "wifi";
          autoconnect = true;
        };
        wifi = {
          mode = "infrastructure";
          ssid = "$WIFI_SSID";
        };
        wifi-security = {
          key-mgmt = "wpa-psk";
          psk = "$WIFI_PSK";
        };
        ipv4.method = "auto";
        ipv6.method = "auto";
      };
    })
  ]);
}
