/// A parsed and validated host file (`hosts/NAME.toml`, see piflash-hosts(5)).
/// Paths are already resolved against the host file's folder.
public struct HostFile: Sendable {
    /// The host's name: `hostname`, else the file name without `.toml`.
    public var name: String
    /// The host file itself.
    public var filePath: String
    public var image: ImageSection
    public var root: RootSelector
    public var secrets: SecretsSection?
    public var files: [FileEntry]
    public var check: CheckSection?
    /// The host file's name without `.toml` (`hosts/NAME.toml` → `NAME`): what `piflash HOST`,
    /// the station queue and the journal's `host` column use. May differ from ``name``.
    public var catalogName: String
    /// Things the user must see although the file is valid (a path under /etc, a secret file
    /// readable by others). Print them as warnings.
    public var warnings: [String] = []

    public struct ImageSection: Sendable {
        /// An image file, or a folder holding exactly one `*.img[.zst|.xz|.gz]`. Absolute.
        public var path: String?
        /// A command run before flashing; its last stdout line is the image path.
        public var build: [String]?
        /// The expected SHA-256 of the uncompressed image, lower-case hex.
        public var sha256: String?
        public init(path: String?, build: [String]?, sha256: String?) {
            self.path = path
            self.build = build
            self.sha256 = sha256
        }
    }

    public enum SecretsSection: Sendable, Equatable {
        /// A SOPS file (YAML, JSON or dotenv) with age (or PGP/KMS) recipients. Absolute path.
        case sops(String)
        /// An age-encrypted YAML or dotenv file. Absolute path.
        case age(String)
        /// A folder of plain files, one value per file (development only). Absolute path.
        case dir(String)
    }

    public struct FileEntry: Sendable, Equatable {
        public enum Source: Sendable, Equatable {
            /// The value of a secret (key path `a.b.c`).
            case secret(String)
            /// The OpenSSH public key line derived from the private key in that secret.
            case publicKeyOf(String)
            /// A template with `${name}` references to secrets, inserted literally.
            case template(String)
            /// A systemd `EnvironmentFile=`: one `NAME="value"` line per variable (in name order),
            /// quoted so that systemd yields exactly the secret's bytes (``EnvironmentFile``).
            case environment([EnvironmentVariable])
        }

        /// One line of an `env` file entry: the variable and the secret (key path) it carries.
        public struct EnvironmentVariable: Sendable, Equatable {
            /// The variable name (``EnvironmentFile/nameProblem(_:)`` holds it valid).
            public var name: String
            /// The secret's key path (`a.b.c`).
            public var secret: String
            public init(name: String, secret: String) {
                self.name = name
                self.secret = secret
            }
        }
        /// Absolute path inside the image.
        public var path: String
        public var source: Source
        public var mode: UInt16
        public var uid: UInt32
        public var gid: UInt32
        public init(path: String, source: Source, mode: UInt16, uid: UInt32 = 0, gid: UInt32 = 0) {
            self.path = path
            self.source = source
            self.mode = mode
            self.uid = uid
            self.gid = gid
        }
    }

    public struct CheckSection: Sendable, Equatable {
        public var address: String?
        public var sshPort: Int?
        public var tcp: [Int]
        /// URLs, possibly with `{address}` to substitute.
        public var http: [String]
        public init(address: String? = nil, sshPort: Int? = nil, tcp: [Int] = [], http: [String] = []) {
            self.address = address
            self.sshPort = sshPort
            self.tcp = tcp
            self.http = http
        }
    }

    public init(
        name: String, filePath: String, image: ImageSection, root: RootSelector = .label("NIXOS_SD"),
        secrets: SecretsSection?, files: [FileEntry], check: CheckSection?
    ) {
        self.name = name
        self.filePath = filePath
        self.image = image
        self.root = root
        self.secrets = secrets
        self.files = files
        self.check = check
        self.catalogName = HostFile.catalogName(ofPath: filePath)
    }
}

/// How the root partition is found on the card: by filesystem label or by partition number.
public enum RootSelector: Sendable, Equatable, CustomStringConvertible {
    case label(String)
    case number(Int)

    public var description: String {
        switch self {
        case .label(let label): return "label \(label)"
        case .number(let number): return "partition \(number)"
        }
    }
}
