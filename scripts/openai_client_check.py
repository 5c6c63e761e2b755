"""Drives a running `host serve` with the official `openai` Python client
(and `huggingface_hub.InferenceClient` when installed), as a user would.

    pip install openai huggingface_hub
    python3 scripts/openai_client_check.py --base http://127.0.0.1:8080 \
        --embedding-model emb --chat-model chat [--api-key KEY]

Checks: models.list; embeddings.create with the client's defaults (it asks
for base64) equal to encoding_format="float"; completions; chat
completions, plain and streamed with usage; InferenceClient
feature_extraction and sentence_similarity on the server's URL; with
--api-key (or HOST_API_KEY), that a wrong key gets AuthenticationError.
Prints one line per check and exits 1 on the first failure. tests/serve_openai.rs
runs it against a server with an API key (scripts/test.sh installs the clients).
"""

import argparse
import os
import sys


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")
    if not ok:
        sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="http://127.0.0.1:8080")
    ap.add_argument("--embedding-model", default=None)
    ap.add_argument("--chat-model", default=None)
    ap.add_argument("--api-key", default=os.environ.get("HOST_API_KEY"))
    args = ap.parse_args()

    import openai

    client = openai.OpenAI(base_url=args.base + "/v1", api_key=args.api_key or "unused", max_retries=0)
    ids = [m.id for m in client.models.list().data]
    check("models.list", bool(ids), str(ids))
    if args.api_key:
        wrong = openai.OpenAI(base_url=args.base + "/v1", api_key="not-the-key-0000000000", max_retries=0)
        try:
            wrong.models.list()
            check("a wrong key is refused", False)
        except openai.AuthenticationError as e:
            check("a wrong key is refused", True, str(e.message)[:60])

    if args.embedding_model:
        texts = ["Hello, world", "A second text"]
        default = client.embeddings.create(model=args.embedding_model, input=texts)
        floats = client.embeddings.create(model=args.embedding_model, input=texts, encoding_format="float")
        same = all(abs(a - b) < 1e-6 for d, f in zip(default.data, floats.data)
                   for a, b in zip(d.embedding, f.embedding))
        check("embeddings.create (default: base64)", same and len(default.data) == 2,
              f"dim {len(default.data[0].embedding)}, usage {default.usage}")
        try:
            from huggingface_hub import InferenceClient
        except ImportError:
            print("skip huggingface_hub not installed")
        else:
            hf = InferenceClient(model=args.base, token=args.api_key)
            vec = hf.feature_extraction("Hello, world")
            check("InferenceClient.feature_extraction", len(vec[0]) == len(floats.data[0].embedding),
                  f"shape {getattr(vec, 'shape', None)}")
            sims = hf.sentence_similarity("Hello, world", other_sentences=["Hello, world", "A second text"])
            check("InferenceClient.sentence_similarity", abs(sims[0] - 1) < 1e-4, str(sims))

    if args.chat_model:
        c = client.completions.create(model=args.chat_model, prompt="Hello", max_tokens=8, temperature=0)
        check("completions.create", c.usage.completion_tokens > 0, repr(c.choices[0].text))
        messages = [{"role": "user", "content": "Hello world"}]
        r = client.chat.completions.create(model=args.chat_model, messages=messages, max_tokens=8, temperature=0)
        text = r.choices[0].message.content
        check("chat.completions.create", r.usage.completion_tokens > 0, repr(text))
        pieces, usage = [], None
        stream = client.chat.completions.create(model=args.chat_model, messages=messages, max_completion_tokens=8,
                                                temperature=0, stream=True, stream_options={"include_usage": True})
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage:
                usage = chunk.usage
        check("chat.completions.create(stream=True)", "".join(pieces) == text and usage is not None,
              f"usage {usage}")
        try:
            client.chat.completions.create(model=args.chat_model, messages=messages, n=2)
            check("n=2 refused", False)
        except openai.BadRequestError as e:
            check("n=2 refused", True, str(e.message)[:80])


if __name__ == "__main__":
    main()
