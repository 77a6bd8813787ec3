// swift-tools-version:6.0
import PackageDescription

// System libraries come from Debian packages (tools/install-deps.sh):
// libopenmpi-dev, libopenblas-dev, libprotobuf-c-dev. Each C shim includes the
// library's header from the default include path and links it by name.
let package = Package(
    name: "lora-dist",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "lora-dist", targets: ["lora-dist"]),
        .library(name: "LoraDist", targets: ["LoraDist"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .target(name: "CMPI", linkerSettings: [.linkedLibrary("mpi")]),
        .target(name: "CBLAS", linkerSettings: [.linkedLibrary("openblas")]),
        .target(name: "CProto", linkerSettings: [.linkedLibrary("protobuf-c")]),
        .target(
            name: "LoraDist",
            dependencies: ["CMPI", "CBLAS", "CProto"]
        ),
        .executableTarget(
            name: "lora-dist",
            dependencies: [
                "LoraDist",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "LoraDistTests",
            dependencies: ["LoraDist"]
        ),
    ],
    swiftLanguageModes: [.v5]
)
