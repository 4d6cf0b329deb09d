# Declarations of the nixpkgs options hosts/nixos/piflash-bootstrap.nix sets or reads, mirrored
# (minimal, same types and merge behaviour) from nixpkgs' sources, so that the tests can evaluate
# the module with `lib.evalModules` without a nixpkgs checkout:
#   nixos/modules/misc/assertions.nix                       assertions
#   nixos/modules/services/networking/ssh/sshd.nix          services.openssh.{enable,hostKeys,generateHostKeys}
#   nixos/modules/services/networking/networkmanager.nix    networking.networkmanager.{enable,ensureProfiles}
#   nixos/modules/services/networking/wpa_supplicant.nix    networking.wireless.{enable,interfaces,secretsFile,networks}
#   nixos/lib/systemd-unit-options.nix, systemd-lib.nix     systemd.services.<name>.{…}, unitOption's merge
#   nixos/modules/system/boot/systemd/tmpfiles.nix          systemd.tmpfiles.rules
#   sops-nix modules/sops/default.nix                       sops.age.sshKeyPaths
#   agenix modules/age.nix                                  age.identityPaths
# `generateHostKeys` exists only in recent nixpkgs; `withGenerateHostKeys = false` evaluates the
# module against an older sshd.nix. sops-nix and agenix are declared only when asked.
{ withGenerateHostKeys ? true, withSops ? false, withAgenix ? false }:
{ lib, config, ... }:

let
  inherit (lib) mkOption types;

  # pkgs.formats.ini { }'s type (pkgs/pkgs-lib/formats.nix): sections of atoms or lists of atoms.
  iniAtom = types.nullOr (types.oneOf [ types.bool types.int types.float types.str ]);
  iniType = types.attrsOf (types.attrsOf (types.either iniAtom (types.listOf iniAtom)));

  # systemd-lib.nix's unitOption: lists concatenate, other values must agree.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge = loc: defs:
      let defs' = lib.filterOverrides defs;
      in
      if lib.any (def: lib.isList def.value) defs' then
        lib.concatMap (def: lib.toList def.value) defs'
      else
        lib.mergeEqualOption loc defs';
  };

  unitNames = mkOption { type = types.listOf types.str; default = [ ]; };

  serviceOptions = { name, ... }: {
    options = {
      enable = mkOption { type = types.bool; default = true; };
      description = mkOption { type = types.singleLineStr; default = ""; };
      wantedBy = unitNames;
      requiredBy = unitNames;
      requires = unitNames;
      wants = unitNames;
      after = unitNames;
      before = unitNames;
      path = mkOption { type = types.listOf (types.oneOf [ types.package types.str ]); default = [ ]; };
      environment = mkOption { type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ])); default = { }; };
      serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      script = mkOption { type = types.lines; default = ""; };
      preStart = mkOption { type = types.lines; default = ""; };
    };
  };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      internal = true;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      internal = true;
      default = [ ];
    };

    services.openssh = {
      enable = mkOption { type = types.bool; default = false; };
      startWhenNeeded = mkOption { type = types.bool; default = false; };
      hostKeys = mkOption {
        type = types.listOf types.attrs;
        default = [
          { bits = 4096; path = "/etc/ssh/ssh_host_rsa_key"; type = "rsa"; }
          { path = "/etc/ssh/ssh_host_ed25519_key"; type = "ed25519"; }
        ];
      };
    } // lib.optionalAttrs withGenerateHostKeys {
      generateHostKeys = mkOption {
        type = types.bool;
        default = config.services.openssh.enable;
      };
    };

    networking.networkmanager = {
      enable = mkOption { type = types.bool; default = false; };
      ensureProfiles = {
        profiles = mkOption {
          type = types.attrsOf (types.submodule {
            freeformType = iniType;
            options.connection = {
              id = mkOption { type = types.str; };
              type = mkOption { type = types.str; };
            };
          });
          apply = lib.filterAttrsRecursive (n: v: v != { });
          default = { };
        };
        environmentFiles = mkOption { type = types.listOf types.path; default = [ ]; };
      };
    };

    networking.wireless = {
      enable = mkOption { type = types.bool; default = false; };
      interfaces = mkOption { type = types.listOf types.str; default = [ ]; };
      secretsFile = mkOption { type = types.nullOr types.path; default = null; };
      networks = mkOption {
        type = types.attrsOf (types.submodule {
          options = {
            psk = mkOption { type = types.nullOr (types.strMatching "[[:print:]]{8,63}"); default = null; };
            pskRaw = mkOption { type = types.nullOr (types.strMatching "([[:xdigit:]]{64})|(ext:[^=]+)"); default = null; };
            auth = mkOption { type = types.nullOr types.str; default = null; };
            hidden = mkOption { type = types.bool; default = false; };
            priority = mkOption { type = types.nullOr types.int; default = null; };
            extraConfig = mkOption { type = types.str; default = ""; };
          };
        });
        default = { };
      };
    };

    systemd.services = mkOption {
      type = types.attrsOf (types.submodule serviceOptions);
      default = { };
    };
    systemd.tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };
  }
  // lib.optionalAttrs withSops {
    sops.age.sshKeyPaths = mkOption { type = types.listOf types.path; default = [ ]; };
  }
  // lib.optionalAttrs withAgenix {
    age.identityPaths = mkOption { type = types.listOf types.path; default = [ ]; };
  };

  # networkmanager.nix's own assertion (the one that does not name piflash).
  config.assertions = lib.mkIf config.networking.networkmanager.enable [
    {
      assertion = config.networking.wireless.enable == true -> false;
      message = "You can not use networking.networkmanager with networking.wireless.";
    }
  ];
}
