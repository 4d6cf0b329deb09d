import ArgumentParser
import PiflashKit

// SKELETON: replaced by the work that implements `piflash check`.
struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check", abstract: "(not yet implemented)")
    func run() async throws { throw PiflashError.usage("piflash check is not implemented yet") }
}
