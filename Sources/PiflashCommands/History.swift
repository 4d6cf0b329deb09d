import ArgumentParser
import PiflashKit

// SKELETON: replaced by the work that implements `piflash history`.
struct History: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "history", abstract: "(not yet implemented)")
    func run() async throws { throw PiflashError.usage("piflash history is not implemented yet") }
}
