import ArgumentParser
import PiflashKit

// SKELETON: replaced by the work that implements `piflash station`.
struct Station: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "station", abstract: "(not yet implemented)")
    func run() async throws { throw PiflashError.usage("piflash station is not implemented yet") }
}
