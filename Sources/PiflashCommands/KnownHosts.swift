import ArgumentParser
import PiflashKit

// SKELETON: replaced by the work that implements `piflash known-hosts`.
struct KnownHosts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "known-hosts", abstract: "(not yet implemented)")
    func run() async throws { throw PiflashError.usage("piflash known-hosts is not implemented yet") }
}
