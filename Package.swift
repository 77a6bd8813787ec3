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
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),   // recipes (--config)
    ],
    targets: [
        .target(name: "CMPI", linkerSettings: [.linkedLibrary("mpi")]),
        .target(name: "CBLAS", linkerSettings: [.linkedLibrary("openblas")]),
        .target(name: "CProto", linkerSettings: [.linkedLibrary("protobuf-c")]),
        .target(
            name: "LoraDist",
            dependencies: ["CMPI", "CBLAS", "CProto"]
        ),
        // `lora-dist --version`: the commit the binary is built from, generated into .build.
        .plugin(name: "BuildCommit", capability: .buildTool()),
        .executableTarget(
            name: "lora-dist",
            dependencies: [
                "LoraDist",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Yams", package: "Yams"),
            ],
            plugins: ["BuildCommit"]
        ),
        .testTarget(
            name: "LoraDistTests",
            dependencies: ["LoraDist"]
        ),
    ],
    swiftLanguageModes: [.v5]
)
