import ArgumentParser
import PiflashKit

/// `piflash`: the root command. `piflash HOST` is `piflash flash HOST`.
public struct Piflash: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "piflash",
        abstract: "Flash a Raspberry Pi sdImage to an SD card, inject the host's bootstrap identity, verify and eject.",
        discussion: """
            Run `piflash HOST` (short for `piflash flash HOST`), insert a card, and confirm. \
            `piflash` with no arguments prints the short usage and the hosts of the hosts folder. \
            See piflash(1), piflash-hosts(5) and piflash-station(8).
            """,
        version: piflashVersion,
        subcommands: [
            Flash.self, Write.self, Verify.self, Devices.self, Station.self, Check.self, KnownHosts.self,
            History.self, Hosts.self,
        ],
        defaultSubcommand: Flash.self
    )

    public init() {}
}

public let piflashVersion = "0.1.0"
