@_exported import PiflashCore
