import PiflashCommands

await Piflash.main()
