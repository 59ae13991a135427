"""`carafe chat`: a terminal chat against a running gateway (through the openai SDK)."""

from __future__ import annotations

import os
from typing import Any

import typer

from carafe.cli.common import console, fail


def register(app: typer.Typer) -> None:
    @app.command("chat")
    def chat(
        model: str = typer.Option(
            "SmolLM2-135M-Instruct", "--model", "-m", help="Model, adapter, name@version or alias"
        ),
        base_url: str = typer.Option("http://127.0.0.1:8000/v1", "--base-url", help="Gateway URL"),
        api_key: str | None = typer.Option(
            None, "--api-key", envvar="CARAFE_API_KEY", help="API key (or $CARAFE_API_KEY)"
        ),
        system: str | None = typer.Option(None, "--system", help="System prompt"),
        max_tokens: int = typer.Option(256, "--max-tokens"),
        temperature: float = typer.Option(0.7, "--temperature"),
        once: str | None = typer.Option(None, "--once", help="Ask one question, print the answer, exit"),
    ) -> None:
        """Chat in the terminal; answers stream in; /reset clears the history, /quit leaves."""
        import openai

        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            fail("no API key: pass --api-key or set CARAFE_API_KEY (create one with `carafe keys create`)")
        client = openai.OpenAI(base_url=base_url, api_key=key)
        history: list[Any] = [{"role": "system", "content": system}] if system else []

        def ask(question: str) -> None:
            history.append({"role": "user", "content": question})
            try:
                stream = client.chat.completions.create(
                    model=model,
                    messages=history,
                    stream=True,
                    max_tokens=max_tokens,
                    temperature=temperature,
                )
                answer, citations = "", None
                for chunk in stream:
                    extra = getattr(chunk, "model_extra", None) or {}
                    citations = extra.get("citations") or citations
                    if chunk.choices and chunk.choices[0].delta.content:
                        piece = chunk.choices[0].delta.content
                        answer += piece
                        console.print(piece, end="", markup=False, highlight=False)
                console.print()
                if citations:
                    for c in citations:
                        console.print(f"  [{c['index']}] {c['title']} ({c['doc_id']} v{c['version']})", style="dim")
                history.append({"role": "assistant", "content": answer})
            except openai.APIStatusError as exc:
                history.pop()
                console.print(f"[red]{exc.status_code}[/]: {exc.message}")
            except openai.APIConnectionError:
                history.pop()
                fail(f"cannot reach the gateway at {base_url} (is `carafe serve` running?)")

        if once is not None:
            ask(once)
            return
        console.print(f"Chatting with [bold]{model}[/] at {base_url}. /reset clears, /quit leaves.", style="dim")
        while True:
            try:
                question = console.input("[bold cyan]you>[/] ").strip()
            except (EOFError, KeyboardInterrupt):
                console.print()
                return
            if not question:
                continue
            if question in ("/quit", "/exit"):
                return
            if question == "/reset":
                del history[1 if system else 0 :]
                continue
            ask(question)
