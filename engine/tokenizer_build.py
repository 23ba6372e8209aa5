"""Writes Step-Audio 2 tokenizer files (byte-level BPE + special tokens) for tiny checkpoints."""

from __future__ import annotations

import heapq
import json
import sys
import unicodedata
from collections import Counter
from pathlib import Path

VOCAB_SIZE = 158_720  # embedding rows of the released model (spec a)
FIRST_SPECIAL_ID = 151_643  # `<|endoftext|>`: every id below is text (spec d)
AUDIO_BASE_ID = 151_696  # `<audio_0>` (spec d, [H])
N_AUDIO_TOKENS = 6562  # `<audio_0>`..`<audio_6561>`; 6561 is the audio pad
MAX_MERGES = 4000
MODEL_MAX_LENGTH = 16_384

# Qwen2(.5)'s pre-tokenizer split: contractions, letters with one leading non-letter, single
# digits, punctuation runs, newlines, spaces.
SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# (id, content, special). Ids tagged [H] in spec d are used as given; the Qwen2.5 block fills
# 151643..151664 as in Qwen2.5 (which puts `<|EOT|>` right after it at 151665, spec d [M-H]);
# the rest are plausible guesses. Product code never depends on them: it looks tokens up by string.
_NAMED_TOKENS: tuple[tuple[int, str, bool], ...] = (
    (151643, "<|endoftext|>", True),
    (151644, "<|im_start|>", True),
    (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True),
    (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True),
    (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False),
    (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False),
    (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False),
    (151665, "<|EOT|>", True),
    (151666, "<|BOT|>", True),
    (151667, "<think>", False),
    (151668, "</think>", False),
    (151688, "<audio_start>", True),
    (151689, "<audio_end>", True),
    (151690, "<audio_patch>", True),
    (151691, "<tts_pad>", True),
    (151693, "<tts_start>", True),
    (151694, "<tts_end>", True),
)

# Rendered by the stock vLLM OpenAI server (spec e, vLLM path): turns `<|BOT|>{role}\n...<|EOT|>`,
# user -> human, each audio part one `<audio_patch>` placed before the text (joined by "\n"),
# tools as a `tool_json_schemas` turn, tool calls replayed as `<tool_call>` text, OpenAI role
# `tool` -> `function_output`, `function_output` -> `input`. A spoken reply is requested with a
# final assistant message `<tts_start>` and `continue_final_message`.
CHAT_TEMPLATE = (
    "{%- macro render_content(content) -%}"
    "{%- if content is none -%}"
    "{%- elif content is string -%}{{- content -}}"
    "{%- else -%}"
    "{%- set ns = namespace(audio=[], text=[]) -%}"
    "{%- for part in content -%}"
    "{%- if part.type == 'text' -%}{%- set ns.text = ns.text + [part.text] -%}"
    "{%- elif part.type in ['audio', 'input_audio', 'audio_url'] -%}"
    "{%- set ns.audio = ns.audio + ['<audio_patch>'] -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if ns.audio -%}{{- (ns.audio + [ns.text | join('\\n')]) | join('\\n') -}}"
    "{%- else -%}{{- ns.text | join('\\n') -}}{%- endif -%}"
    "{%- endif -%}"
    "{%- endmacro -%}"
    "{%- set ns_sys = namespace(first=0) -%}"
    "{%- if tools -%}"
    "{%- if messages and messages[0].role == 'system' -%}"
    "{{- '<|BOT|>system\\n' + render_content(messages[0].content) + '<|EOT|>' -}}"
    "{%- set ns_sys.first = 1 -%}"
    "{%- else -%}"
    # The fork's quirk (spec e.6): an empty, unclosed system turn when there is no system message.
    "{{- '<|BOT|>system\\n' -}}"
    "{%- endif -%}"
    "{{- '<|BOT|>tool_json_schemas\\n' + (tools | tojson) + '<|EOT|>' -}}"
    "{%- endif -%}"
    "{%- for message in messages[ns_sys.first:] -%}"
    "{%- if message.role == 'tool' -%}"
    "{%- set ns_tool = namespace(name=message.name if message.name is defined and message.name "
    "else '') -%}"
    "{%- if not ns_tool.name and message.tool_call_id is defined -%}"
    "{%- for earlier in messages -%}"
    "{%- if earlier.role == 'assistant' and earlier.tool_calls -%}"
    "{%- for call in earlier.tool_calls -%}"
    "{%- if call.id is defined and call.id == message.tool_call_id -%}"
    "{%- set ns_tool.name = call.function.name -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|BOT|>function_output\\n' + ns_tool.name + '\\n' + render_content(message.content)"
    " + '<|EOT|>' -}}"
    "{%- else -%}"
    "{%- if message.role == 'user' -%}{%- set role = 'human' -%}"
    "{%- elif message.role == 'function_output' -%}{%- set role = 'input' -%}"
    "{%- else -%}{%- set role = message.role -%}{%- endif -%}"
    "{{- '<|BOT|>' + role + '\\n' + render_content(message.content) -}}"
    "{%- if message.role == 'assistant' and message.tool_calls -%}"
    "{%- for call in message.tool_calls -%}"
    "{%- set fn = call.function if call.function is defined else call -%}"
    "{{- '<tool_call>function\\n' + fn.name + '\\n' -}}"
    "{%- if fn.arguments is string -%}{{- fn.arguments -}}"
    "{%- else -%}{{- fn.arguments | tojson(ensure_ascii=true) -}}{%- endif -%}"
    "{{- '</tool_call>' -}}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|EOT|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|BOT|>assistant\\n' -}}{%- endif -%}"
)

# A small bilingual corpus so that ordinary English and Chinese text gets real merges.
CORPUS = """\
You are a helpful assistant. Give me a brief introduction to the Great Wall.
The Great Wall of China is a series of fortifications built across the historical northern
borders of ancient Chinese states to protect against nomadic groups from the Eurasian Steppe.
Hello, how are you today? I am fine, thank you. What would you like to talk about?
Please briefly explain the important events involved in this audio clip.
You are an expert in audio analysis, please analyze the audio content and answer the questions
accurately. Translate the speech into Chinese. Now write a short poem about the sea.
The weather today is sunny with a light breeze, and the temperature is about twenty degrees.
It will rain tomorrow afternoon, so remember to take an umbrella when you go out.
What time is it now? It is half past three in the afternoon, on Friday, the twenty-ninth.
I would like to book a table for two people at seven o'clock this evening.
Could you tell me the way to the nearest train station? Turn left at the second corner.
She said that she had already finished reading the book, and that it was very interesting.
We should start the meeting at nine, because many people have other plans in the afternoon.
There are three apples, four oranges and twelve bananas on the table in the kitchen.
Machine learning models learn patterns from data; speech recognition turns sound into text.
A realtime voice assistant listens, thinks and answers while the user can interrupt it.
They're going to the park, and we'll meet them there later if it doesn't rain.
The quick brown fox jumps over the lazy dog. Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 2025.
Thank you for your question! Let me think about it for a moment before I answer.
In 1969, humans walked on the Moon for the first time; the mission was called Apollo 11.
The function returned an error: the city name was not found, please try another one.
Music, art and literature are important parts of every culture in the world.
The children were playing in the garden while their parents were cooking dinner.
{"location": "Beijing", "unit": "celsius", "date": "today", "query": "weather"}
get_weather, get_time, web_search, search_audio: tools the assistant may call.
你好，请问有什么可以帮助你的吗？我是一个乐于助人的助手。
请记录下你所听到的语音内容。请仔细聆听这段语音，然后将其内容翻译成中文。
请用语音与我交流。请用默认女声与用户交流。今天是2025年8月29日，星期五。
你是由阶跃星辰训练的小跃，请用口语化形式总结检索结果，简短地回答用户的问题。
长城是中国古代的军事防御工程，是一道高大、坚固而且连绵不断的长垣。
今天天气很好，阳光明媚，温度大约二十度，适合出去散步。
明天下午会下雨，出门的时候记得带伞。现在是下午三点半。
我想预订今天晚上七点的两人餐桌，请问还有位置吗？
请问去最近的火车站怎么走？在第二个路口向左转就到了。
她说她已经读完了那本书，而且那本书非常有意思。
我们应该九点开始开会，因为很多人下午还有别的安排。
机器学习模型从数据中学习规律，语音识别把声音变成文字。
实时语音助手一边听一边思考和回答，用户可以随时打断它。
桌子上有三个苹果、四个橙子和十二根香蕉。
谢谢你的问题！让我想一想再回答你。
音乐、艺术和文学是世界上每一种文化的重要组成部分。
孩子们在花园里玩耍，他们的父母在做晚饭。
北京今天晴，最高气温二十五度，最低气温十五度，空气质量良好。
"""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by every byte-level BPE (Qwen2 included)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def special_tokens() -> list[tuple[int, str, bool]]:
    """Every added token as (id, content, special), ordered by id."""
    audio = [(AUDIO_BASE_ID + k, f"<audio_{k}>", True) for k in range(N_AUDIO_TOKENS)]
    return sorted(list(_NAMED_TOKENS) + audio)


def _pre_tokenizer():  # noqa: ANN202 - a tokenizers object
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])


def train_merges(text: str, max_merges: int = MAX_MERGES) -> list[tuple[str, str]]:
    """Byte-level BPE merges learnt from `text`; ties go to the smallest pair, so it is stable."""
    words = Counter(
        piece for piece, _ in _pre_tokenizer().pre_tokenize_str(unicodedata.normalize("NFC", text))
    )
    symbols = {word: list(word) for word in words}
    pair_counts: Counter[tuple[str, str]] = Counter()
    pair_words: dict[tuple[str, str], set[str]] = {}
    for word, count in words.items():
        for pair in zip(symbols[word], symbols[word][1:], strict=False):
            pair_counts[pair] += count
            pair_words.setdefault(pair, set()).add(word)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while heap and len(merges) < max_merges:
        neg_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg_count:
            continue  # stale entry; the current count was pushed again
        if -neg_count < 2:
            break
        merges.append(pair)
        merged = pair[0] + pair[1]
        touched: set[tuple[str, str]] = set()
        for word in sorted(pair_words.pop(pair, ())):
            old = symbols[word]
            new: list[str] = []
            i = 0
            while i < len(old):
                if i + 1 < len(old) and (old[i], old[i + 1]) == pair:
                    new.append(merged)
                    i += 2
                else:
                    new.append(old[i])
                    i += 1
            count = words[word]
            for p in zip(old, old[1:], strict=False):
                pair_counts[p] -= count
                touched.add(p)
            for p in zip(new, new[1:], strict=False):
                pair_counts[p] += count
                pair_words.setdefault(p, set()).add(word)
                touched.add(p)
            symbols[word] = new
        pair_counts.pop(pair, None)
        for p in touched:
            if p != pair and pair_counts.get(p, 0) > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
    return merges


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Bytes first (GPT-2 order), then one token per merge, then the added tokens at their ids.

    Text ids stay below FIRST_SPECIAL_ID and leave a gap up to it (a tiny vocabulary); added
    tokens are also put in the BPE vocabulary because `tokenizers` otherwise renumbers them.
    """
    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    if len(vocab) > FIRST_SPECIAL_ID:
        raise ValueError(f"{len(vocab)} text tokens do not fit below {FIRST_SPECIAL_ID}")
    for token_id, content, _ in special_tokens():
        vocab[content] = token_id
    return vocab


def _added_token(token_id: int, content: str, special: bool) -> dict:
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": special}


def tokenizer_json(vocab: dict[str, int], merges: list[tuple[str, str]]) -> dict:
    """The `tokenizer.json` of a Qwen2 fast tokenizer."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                  "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added_token(*token) for token in special_tokens()],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": SPLIT_REGEX}, "behavior": "Isolated",
             "invert": False},
            byte_level,
        ]},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": False, "vocab": vocab,
                  "merges": [[a, b] for a, b in merges]},
    }


def _named_specials() -> list[str]:
    return [content for _, content, special in _NAMED_TOKENS if special
            and content not in ("<|endoftext|>",)]


def tokenizer_config() -> dict:
    """`tokenizer_config.json`: Qwen2TokenizerFast, no BOS, the Step-Audio 2 chat template."""
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(token_id): {k: v for k, v in _added_token(token_id, content, special).items()
                            if k != "id"}
            for token_id, content, special in special_tokens()
        },
        "additional_special_tokens": _named_specials(),
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2TokenizerFast",
        "unk_token": None,
    }


def _dump(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def write_tokenizer(out_dir: str | Path) -> None:
    """Write tokenizer.json, tokenizer_config.json, vocab.json, merges.txt,
    special_tokens_map.json and added_tokens.json into `out_dir` (created if missing).

    Deterministic: the same files on every call.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sys.stderr.write(f"writing tokenizer files to {out}\n")
    merges = train_merges(CORPUS)
    vocab = build_vocab(merges)
    _dump(out / "tokenizer.json", tokenizer_json(vocab, merges))
    _dump(out / "tokenizer_config.json", tokenizer_config())
    _dump(out / "vocab.json", vocab)
    (out / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    eos = {"content": "<|endoftext|>", "lstrip": False, "normalized": False, "rstrip": False,
           "single_word": False}
    _dump(out / "special_tokens_map.json",
          {"additional_special_tokens": _named_specials(), "eos_token": eos, "pad_token": eos})
    _dump(out / "added_tokens.json",
          {content: token_id for token_id, content, _ in special_tokens()})
