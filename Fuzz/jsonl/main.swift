// A JSON Lines corpus file, as `--data file.jsonl` reads it (Corpus: UTF-8 check, a BOM,
// line splitting, JSONLines' parser, the text field, tokenization into blocks), with and
// without --replace-invalid-utf8, and with --text-field content.
import Foundation
@testable import LoraDist

let file = scratch + "/data.jsonl"
let tokenizer = ByteTokenizer()

func fuzzOne(_ data: Data) {
    put(data, file)
    for reading in [CorpusReading(), CorpusReading(textField: "content", replaceInvalidUTF8: true)] {
        _ = try? Corpus(path: file, tokenizer: tokenizer, devPercent: 5, reading: reading)
    }
}

func fuzzSeeds() -> [Data] {
    [#"{"text":"hello"}"#, #"{"id":1,"text":"a\u00e9\ud83d\ude42\n","content":"c"}"#, "\u{FEFF}{\"text\":\"x\"}\n\n{\"text\":\"\"}\n",
     #"{"text":"\ud800"}"#, #"{"a":[1,-2.5e3,true,null,{"b":NaN}],"text":"t"}"#, #"[1,2]"#]
        .map { Data($0.utf8) }
}
