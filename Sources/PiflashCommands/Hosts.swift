import ArgumentParser
import PiflashKit

// SKELETON: replaced by the work that implements `piflash hosts`.
struct Hosts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "hosts", abstract: "(not yet implemented)")
    func run() async throws { throw PiflashError.usage("piflash hosts is not implemented yet") }
}
