import Foundation

/// Where the tools/fetch-*.sh scripts put what they download (never committed), and so where
/// lora-dist and the tests look by default.
public enum CacheFolders {
    static var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// $LORA_DIST_DATA, else ~/.cache/lora-dist/data: corpora (tools/fetch-corpus.sh, fetch-corpora.sh).
    public static var data: String {
        environment["LORA_DIST_DATA"] ?? (environment["HOME"] ?? ".") + "/.cache/lora-dist/data"
    }

    /// $LORA_DIST_MODELS, else ~/.cache/lora-dist/models: models (tools/fetch-smollm2.sh).
    public static var models: String {
        environment["LORA_DIST_MODELS"] ?? (environment["HOME"] ?? ".") + "/.cache/lora-dist/models"
    }

    /// $LORA_DIST_TOKENS, else ~/.cache/lora-dist/tokens: corpora tokenised once (TokenFile), rebuilt
    /// when a source file or the tokenizer changes. Safe to delete.
    public static var tokens: String {
        environment["LORA_DIST_TOKENS"] ?? (environment["HOME"] ?? ".") + "/.cache/lora-dist/tokens"
    }

    /// The default job's corpus (tools/fetch-corpus.sh).
    public static var defaultCorpus: String { data + "/shakespeare" }

    /// The domains `compare` reads (tools/fetch-corpora.sh): general, technical, legal, medical.
    public static var corpora: String { data + "/corpora" }
}
