@_exported import PiflashCore
@_exported import PiflashPlatform
