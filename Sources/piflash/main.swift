import PiflashCommands

await Piflash.runMain()
