import ArgumentParser
import PiflashKit

// SKELETON: replaced by the work that implements `piflash flash`.
struct Flash: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "flash", abstract: "(not yet implemented)")
    func run() async throws { throw PiflashError.usage("piflash flash is not implemented yet") }
}
