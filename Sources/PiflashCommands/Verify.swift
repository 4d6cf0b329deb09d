import ArgumentParser
import PiflashKit

// SKELETON: replaced by the work that implements `piflash verify`.
struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "verify", abstract: "(not yet implemented)")
    func run() async throws { throw PiflashError.usage("piflash verify is not implemented yet") }
}
