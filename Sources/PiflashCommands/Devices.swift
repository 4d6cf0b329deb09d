import ArgumentParser
import PiflashKit

// SKELETON: replaced by the work that implements `piflash devices`.
struct Devices: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "devices", abstract: "(not yet implemented)")
    func run() async throws { throw PiflashError.usage("piflash devices is not implemented yet") }
}
