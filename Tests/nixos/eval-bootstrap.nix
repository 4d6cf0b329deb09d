# Evaluates hosts/nixos/piflash-bootstrap.nix with lib.evalModules against the mirrored nixpkgs
# option declarations (nixpkgs-options.nix) and returns what the tests check, as JSON-able data:
#   nix-instantiate --eval --strict --json Tests/nixos/eval-bootstrap.nix \
#     --arg nixpkgsLib ../shared/nixpkgs-lib/lib --argstr backend networkmanager
# `pkgs` is a stand-in holding program folders (nothing is built): the check unit's PATH.
{ nixpkgsLib
, backend ? "networkmanager"
, ssid ? null
, wirelessEnabled ? false
, withGenerateHostKeys ? true
, withSops ? false
, withAgenix ? false
, directory ? "/var/lib/bootstrap"
, environmentFile ? "/var/lib/networkmanager/system-connections.env"
, runtimeDirectory ? "/run/piflash-bootstrap"
, binFolder ? "/usr"
}:

let
  lib = import nixpkgsLib;
  pkgs = {
    openssh = binFolder;
    coreutils = binFolder;
    gnused = binFolder;
    wpa_supplicant = binFolder;
  };
  evaluated = lib.evalModules {
    modules = [
      (import ./nixpkgs-options.nix { inherit withGenerateHostKeys withSops withAgenix; })
      ../../hosts/nixos/piflash-bootstrap.nix
      {
        _module.args.pkgs = pkgs;
        services.piflash-bootstrap = {
          enable = true;
          inherit directory runtimeDirectory;
          wifi = { inherit backend ssid environmentFile; };
        };
      }
      (lib.mkIf wirelessEnabled { networking.wireless.enable = true; })
    ];
  };
  config = evaluated.config;
  services = config.systemd.services;
  profiles = config.networking.networkmanager.ensureProfiles.profiles;
in
{
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
  hostKeys = config.services.openssh.hostKeys;
  opensshEnabled = config.services.openssh.enable;
  generateHostKeys = config.services.openssh.generateHostKeys or null;
  units = lib.mapAttrs (name: unit: {
    inherit (unit) requires after before wantedBy;
  }) services;
  check = {
    inherit (services.piflash-bootstrap-check) description script path;
    serviceConfig = services.piflash-bootstrap-check.serviceConfig;
  };
  tmpfiles = config.systemd.tmpfiles.rules;
  networkmanager = {
    inherit (config.networking.networkmanager) enable;
    environmentFiles = config.networking.networkmanager.ensureProfiles.environmentFiles;
    profileNames = lib.attrNames profiles;
    # What networkmanager.nix writes (pkgs.formats.ini's generate = lib.generators.toINI { }),
    # before envsubst.
    profiles = lib.mapAttrs (name: profile: lib.generators.toINI { } profile) profiles;
  };
  wireless = {
    inherit (config.networking.wireless) enable secretsFile;
    networks = lib.mapAttrs (name: network: { inherit (network) psk pskRaw; }) config.networking.wireless.networks;
  };
  sopsKeyPaths = if withSops then config.sops.age.sshKeyPaths else null;
  agenixIdentityPaths = if withAgenix then config.age.identityPaths else null;
}
