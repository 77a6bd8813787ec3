/// What `lora-dist --version` prints: the version and the git commit the binary was built
/// from. `buildCommit` is generated at build time by Plugins/BuildCommit (the checkout's HEAD;
/// "unknown commit" outside a git checkout or without git); uncommitted changes are not marked.
enum BuildInfo {
    static let version = "0.1.0"
    static var commit: String { buildCommit }
    /// `--version`: "0.1.0 (commit 0123456789ab)".
    static var versionLine: String { commit.hasPrefix("unknown") ? "\(version) (\(commit))" : "\(version) (commit \(commit))" }
    /// In file headers: "lora-dist 0.1.0, commit 0123456789ab".
    static var banner: String { commit.hasPrefix("unknown") ? "lora-dist \(version), \(commit)" : "lora-dist \(version), commit \(commit)" }
}
