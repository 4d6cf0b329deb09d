// The `sops` binary, for SOPS files whose data key only PGP or a cloud KMS can open.
// Its output (the plaintext) is read from a pipe into memory, never written to a file.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PiflashCore

/// Running `sops --decrypt` with its stdout captured in memory.
enum SOPSBinary {
    /// The `sops` executable on `PATH`, if there is one.
    static func find(environment: [String: String]) -> String? {
        let searchPath = environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for folder in searchPath.split(separator: ":") where !folder.isEmpty {
            let candidate = String(folder) + "/sops"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// `sops --decrypt --input-type FORMAT --output-type json FILE`, its stdout parsed in memory.
    /// - Parameter environment: the environment sops runs with (it finds its keys there).
    /// - Throws: ``PiflashError`` (exit 1) when sops fails (its own message went to stderr).
    static func decrypt(executable: String, path: String, format: SOPSFormat, environment: [String: String]) throws -> SecretValues {
        let output = try run(
            executable, ["sops", "--decrypt", "--input-type", format.rawValue, "--output-type", "json", path],
            environment: environment, path: path)
        let tree: SOPSNode
        do {
            tree = try OrderedJSON.parse(output)
        } catch {
            throw PiflashError.failure("sops --decrypt printed something else than JSON", path: path)
        }
        var values = tree.flattened()
        return SecretValues(wiping: &values)
    }

    private static func run(_ executable: String, _ arguments: [String], environment: [String: String], path: String) throws -> [UInt8] {
        var pipeEnds: [Int32] = [0, 0]
        guard pipe(&pipeEnds) == 0 else { throw PiflashError.system("pipe", errno: errno, path: path) }
        let (readEnd, writeEnd) = (pipeEnds[0], pipeEnds[1])
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addclose(&actions, readEnd)
        posix_spawn_file_actions_adddup2(&actions, writeEnd, 1)
        posix_spawn_file_actions_addclose(&actions, writeEnd)
        var cArguments = arguments.map { strdup($0) }
        cArguments.append(nil)
        var cEnvironment = environment.map { strdup($0.key + "=" + $0.value) }
        cEnvironment.append(nil)
        defer {
            for argument in cArguments { free(argument) }
            for entry in cEnvironment { free(entry) }
        }
        var pid: pid_t = 0
        let spawnError = posix_spawn(&pid, executable, &actions, nil, cArguments, cEnvironment)
        close(writeEnd)
        guard spawnError == 0 else {
            close(readEnd)
            throw PiflashError.system("posix_spawn", errno: spawnError, path: executable, what: "cannot run sops")
        }
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(readEnd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            output += buffer[0..<count]
        }
        close(readEnd)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exited = (status & 0x7f) == 0
        let exitCode = (status >> 8) & 0xff
        guard exited && exitCode == 0 else {
            // Wipe what was read, then fail without showing it.
            for index in output.indices { output[index] = 0 }
            throw PiflashError.failure(
                exited ? "sops --decrypt failed with exit status \(exitCode) (its message is above)" : "sops --decrypt was killed by a signal",
                path: path)
        }
        return output
    }
}
