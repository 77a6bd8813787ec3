// swift-tools-version:6.0
import Foundation
import PackageDescription

// The library's loops (softmax, SwiGLU, RMSNorm, RoPE, AdamW, ...) compile for x86-64 Haswell
// (AVX2, FMA) instead of SSE2: 8 floats per instruction instead of 4 (docs/performance.md,
// "Element-wise code for AVX2"). Every CPU of the machine kinds this runs on has them, and the
// executable refuses, by name, one without (Sources/CPUFeatures) before any library code runs.
// LORA_DIST_TARGET_CPU=x86-64 builds for the baseline instead.
let targetCPU = ProcessInfo.processInfo.environment["LORA_DIST_TARGET_CPU"] ?? "haswell"
guard ["haswell", "x86-64"].contains(targetCPU) else {
    FileHandle.standardError.write(Data("LORA_DIST_TARGET_CPU=\(targetCPU) is not implemented: it takes haswell (the default) or x86-64\n".utf8))
    exit(1)
}
#if arch(x86_64)
let libraryCPU: [SwiftSetting] = targetCPU == "haswell" ? [.unsafeFlags(["-target-cpu", "haswell"])] : []
let targetDefine: [SwiftSetting] = targetCPU == "haswell" ? [.define("LORA_DIST_TARGET_HASWELL")] : []
#else
let libraryCPU: [SwiftSetting] = []
let targetDefine: [SwiftSetting] = []
#endif

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
        .target(name: "CPUFeatures", swiftSettings: targetDefine),  // compiled for the baseline: it checks the CPU
        .target(
            name: "LoraDist",
            dependencies: ["CMPI", "CBLAS", "CProto", "CPUFeatures"],
            swiftSettings: libraryCPU + targetDefine   // LowRank: FMA instructions only on Haswell
        ),
        // `lora-dist --version`: the commit the binary is built from, generated into .build.
        .plugin(name: "BuildCommit", capability: .buildTool()),
        .executableTarget(
            name: "lora-dist",
            dependencies: [
                "LoraDist",
                "CPUFeatures",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Yams", package: "Yams"),
            ],
            plugins: ["BuildCommit"]
        ),
        .testTarget(
            name: "LoraDistTests",
            dependencies: ["LoraDist", "CPUFeatures"]
        ),
    ],
    swiftLanguageModes: [.v5]
)
