import ArgumentParser
import PiflashKit

// SKELETON: replaced by the work that implements `piflash write`.
struct Write: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "write", abstract: "(not yet implemented)")
    func run() async throws { throw PiflashError.usage("piflash write is not implemented yet") }
}
