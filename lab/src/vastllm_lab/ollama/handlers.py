"""The endpoints of the Ollama lab double: /api/* (shapes from Ollama's docs/api.md) and /lab/*.

Each handler reads the request body, calls the state (``state.LabOllama``) and answers through
the wire helpers (``wire.WireHandler``). ``ROUTES`` maps (method, path) to a handler.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from typing import Any, Callable

from . import faults as faults_mod
from .catalog import CatalogEntry
from .config import ConfigError, parse_duration
from .generation import RequestError, parse_options, plan_reply
from .names import InvalidModelName, normalize
from .prompt import fit_context, tokenize
from .state import os_error_text
from .store import ModelRecord
from .wire import HTTPError, NDJSONStream, WireHandler, rfc3339


def details(entry: CatalogEntry) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": entry.family,
        "families": list(entry.families),
        "parameter_size": entry.parameter_size,
        "quantization_level": entry.quantization,
    }


def _message_list(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestError("messages must be a list of message objects")
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{index}] must be an object")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise RequestError(f"messages[{index}]: role is required")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise RequestError(
                f"json: cannot unmarshal {type(content).__name__} into Go struct field "
                f"Message.messages.content of type string"
            )
        images = message.get("images")
        if images is not None and not (
            isinstance(images, list) and all(isinstance(i, str) for i in images)
        ):
            raise RequestError(f"messages[{index}]: images must be a list of base64 strings")
    return value


def _tools(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise RequestError("tools must be a list of tool objects")
    return value


def _think(value: Any) -> bool:
    if value is None or value is False:
        return False
    if value is True or value in ("low", "medium", "high"):
        return True
    raise RequestError(f"invalid think value {value!r} (true, false, low, medium or high)")


def _flag(req: dict[str, Any], key: str) -> bool:
    """`truncate` / `shift`: booleans, true when absent (as in Ollama)."""
    value = req.get(key)
    if value is None:
        return True
    if not isinstance(value, bool):
        raise RequestError(f"{key} must be true or false")
    return value


def _pause_until(deadline: float) -> None:
    """Sleep until `time.perf_counter()` reaches `deadline` (at once if it has)."""
    remaining = deadline - time.perf_counter()
    if remaining > 0:
        time.sleep(remaining)


class Handler(WireHandler):
    """The endpoints; each takes the raw request body."""

    # -- plain endpoints ------------------------------------------------------------------
    def root(self, body: bytes) -> None:
        self.send_text(200, "Ollama is running")

    def version(self, body: bytes) -> None:
        self.send_json(200, {"version": self.server.app.settings.version})

    def tags(self, body: bytes) -> None:
        models = [
            {
                "name": r.name,
                "model": r.name,
                "modified_at": rfc3339(r.modified_at),
                "size": r.entry.size,
                "digest": r.digest,
                "details": details(r.entry),
            }
            for r in self.server.app.store.list()
        ]
        self.send_json(200, {"models": models})

    def ps(self, body: bytes) -> None:
        app = self.server.app
        models = []
        for name, loaded in app.loaded():
            record = app.store.get(name)
            if record is None:
                continue
            models.append(
                {
                    "name": name,
                    "model": name,
                    "size": record.entry.size,
                    "digest": record.digest,
                    "details": details(record.entry),
                    "expires_at": rfc3339(loaded.expires_at),
                    "size_vram": record.entry.size,
                    "context_length": loaded.context_length,
                }
            )
        self.send_json(200, {"models": models})

    def _model_field(self, req: dict[str, Any]) -> Any:
        raw = req.get("model") or req.get("name")
        if not raw:
            raise RequestError("model is required")
        if not isinstance(raw, str):
            raise RequestError("model must be a string")
        return raw

    def show(self, body: bytes) -> None:
        req = self.read_json(body)
        raw = self._model_field(req)
        record = self.server.app.lookup(raw)
        if record is None:
            raise HTTPError(404, f"model '{raw}' not found")
        entry = record.entry
        family = entry.family
        params = "\n".join(f"PARAMETER {line}" for line in entry.parameters.splitlines())
        modelfile = (
            '# Modelfile generated by "ollama show" (vastllm lab double: no weights)\n'
            f"FROM {record.name}\n"
            f'TEMPLATE """{entry.template}"""\n{params}\n'
        )
        self.send_json(
            200,
            {
                "license": entry.license,
                "modelfile": modelfile,
                "parameters": entry.parameters,
                "template": entry.template,
                "details": details(entry),
                "model_info": {
                    "general.architecture": family,
                    "general.basename": record.name.split(":")[0].split("/")[-1],
                    "general.file_type": 15,
                    "general.parameter_count": entry.parameter_count,
                    "general.quantization_version": 2,
                    f"{family}.context_length": entry.context_length,
                    f"{family}.embedding_length": entry.embedding_length,
                },
                "capabilities": list(entry.capabilities),
                "modified_at": rfc3339(record.modified_at),
            },
        )

    def delete(self, body: bytes) -> None:
        req = self.read_json(body)
        raw = self._model_field(req)
        app = self.server.app
        try:
            name = normalize(raw)
        except InvalidModelName:
            raise HTTPError(404, f"model '{raw}' not found") from None
        try:
            removed = app.store.delete(name)
        except OSError as exc:
            raise HTTPError(500, os_error_text("remove", exc, app.store.models_dir)) from None
        if not removed:
            raise HTTPError(404, f"model '{raw}' not found")
        app.unload(name)
        self._send(200, b"", "application/json; charset=utf-8")

    def pull(self, body: bytes) -> None:
        req = self.read_json(body)
        raw = self._model_field(req)
        stream = req.get("stream", True)
        if not isinstance(stream, bool):
            raise RequestError("stream must be true or false")
        try:
            name = normalize(raw)
        except InvalidModelName:
            raise HTTPError(400, "invalid model name") from None
        events = self.server.app.pull_events(name)
        if not stream:
            last: dict[str, Any] = {}
            for event in events:
                last = event
                if "error" in event:
                    raise HTTPError(500, event["error"])
            self.send_json(200, last)
            return
        out = NDJSONStream(self)
        for event in events:
            out.send(event)
        out.end()

    # -- generation ------------------------------------------------------------------------
    def _prepare(self, req: dict[str, Any]) -> tuple[ModelRecord, float, bool]:
        app = self.server.app
        if app.fault("busy"):
            raise HTTPError(
                503, "server busy, please try again.  maximum pending requests exceeded"
            )
        raw = req.get("model")
        if not raw:
            raise RequestError("model is required")
        if not isinstance(raw, str):
            raise RequestError("model must be a string")
        record = app.lookup(raw)
        if record is None:
            raise HTTPError(404, f'model "{raw}" not found, try pulling it first')
        if _think(req.get("think")) and not record.entry.has("thinking"):
            raise RequestError(f'"{raw}" does not support thinking')
        if req.get("tools") and not record.entry.has("tools"):
            raise RequestError(f'"{raw}" does not support tools')
        keep_alive = app.settings.keep_alive
        if req.get("keep_alive") is not None:
            try:
                keep_alive = parse_duration(req["keep_alive"])
            except ConfigError as exc:
                raise RequestError(str(exc)) from None
        stream = req.get("stream", True)
        if not isinstance(stream, bool):
            raise RequestError("stream must be true or false")
        return record, keep_alive, stream

    def _load_only(self, record: ModelRecord, keep_alive: float, req: dict[str, Any]) -> bool:
        """Empty prompt/messages: load (or with keep_alive 0, unload) the model."""
        app = self.server.app
        if keep_alive == 0:
            app.unload(record.name)
            return False
        app.load(record, req.get("options"))
        app.keep(record, keep_alive)
        return True

    def chat(self, body: bytes) -> None:
        began = time.perf_counter()  # the double's own work starts: see _generate
        req = self.read_json(body)
        app = self.server.app
        record, keep_alive, stream = self._prepare(req)
        error = app.fault("chat_error")
        if error:
            raise HTTPError(500, error)
        messages = _message_list(req.get("messages"))
        tools = _tools(req.get("tools"))
        think = _think(req.get("think"))
        parse_options(req.get("options"))  # a bad option is a 400 before the prompt is looked at
        # the prompt is rendered and counted once, here (400 when it cannot fit)
        tokens = self._fit(record, req, messages, tools) if messages else []
        reply = plan_reply(
            record.name,
            messages,
            tools,
            req.get("options"),
            think,
            req.get("format"),
            leak=app.fault("tool_call_leak"),
            prompt_count=len(tokens),
        )
        if not messages:
            loaded = self._load_only(record, keep_alive, req)
            self.send_json(
                200,
                {
                    "model": record.name,
                    "created_at": rfc3339(time.time()),
                    "message": {"role": "assistant", "content": ""},
                    "done_reason": "load" if loaded else "unload",
                    "done": True,
                },
            )
            return

        def chunk(thinking: str, content: str) -> dict[str, Any]:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            return {
                "model": record.name,
                "created_at": rfc3339(time.time()),
                "message": message,
                "done": False,
            }

        def tool_chunk() -> dict[str, Any]:
            item = chunk("", "")
            item["message"]["tool_calls"] = reply.tool_calls
            return item

        def whole() -> dict[str, Any]:
            item = chunk(reply.thinking_text, reply.content_text)
            if reply.tool_calls:
                item["message"]["tool_calls"] = reply.tool_calls
            return item

        self._generate(
            record, keep_alive, stream, reply, req, tokens, chunk, tool_chunk, whole, "message",
            began,
        )  # fmt: skip

    def generate(self, body: bytes) -> None:
        began = time.perf_counter()
        req = self.read_json(body)
        app = self.server.app
        record, keep_alive, stream = self._prepare(req)
        prompt = req.get("prompt") or ""
        if not isinstance(prompt, str):
            raise RequestError("prompt must be a string")
        images = req.get("images")
        if not prompt and not images:
            loaded = self._load_only(record, keep_alive, req)
            self.send_json(
                200,
                {
                    "model": record.name,
                    "created_at": rfc3339(time.time()),
                    "response": "",
                    "done": True,
                    "done_reason": "load" if loaded else "unload",
                },
            )
            return
        error = app.fault("chat_error")
        if error:
            raise HTTPError(500, error)
        messages: list[dict[str, Any]] = []
        system = req.get("system")
        if isinstance(system, str) and system:
            messages.append({"role": "system", "content": system})
        user: dict[str, Any] = {"role": "user", "content": prompt}
        if images:
            user["images"] = images
        messages.append(_message_list([user])[0])
        think = _think(req.get("think"))
        parse_options(req.get("options"))  # a bad option is a 400 before the prompt is looked at
        tokens = self._fit(record, req, messages, [])
        reply = plan_reply(
            record.name,
            messages,
            [],
            req.get("options"),
            think,
            req.get("format"),
            prompt_count=len(tokens),
        )

        def chunk(thinking: str, content: str) -> dict[str, Any]:
            item: dict[str, Any] = {
                "model": record.name,
                "created_at": rfc3339(time.time()),
                "response": content,
                "done": False,
            }
            if thinking:
                item["thinking"] = thinking
            return item

        def whole() -> dict[str, Any]:
            return chunk(reply.thinking_text, reply.content_text)

        self._generate(
            record, keep_alive, stream, reply, req, tokens, chunk, whole, whole, "response", began
        )

    def _fit(
        self,
        record: ModelRecord,
        req: dict[str, Any],
        messages: list[dict[str, Any]],
        tools: list[Any],
    ) -> list[str]:
        """The prompt tokens that go to the model, after `num_ctx` (400 when they cannot fit)."""
        truncate, shift = _flag(req, "truncate"), _flag(req, "shift")
        options = req.get("options")
        num_ctx = options.get("num_ctx") if isinstance(options, dict) else None
        if not (
            isinstance(num_ctx, (int, float)) and not isinstance(num_ctx, bool) and num_ctx > 0
        ):
            num_ctx = self.server.app.settings.context_length
        num_ctx = min(int(num_ctx), record.entry.context_length)
        fit = fit_context(messages, tools, num_ctx, truncate, shift)
        if fit.error is not None:
            raise HTTPError(400, fit.error)
        if fit.dropped_messages or fit.shifted:
            self.server.app.info(
                "truncating input prompt",
                limit=str(num_ctx),
                prompt=str(fit.full_count),
                new=str(len(fit.tokens)),
            )
        return fit.tokens

    def _generate(
        self,
        record: ModelRecord,
        keep_alive: float,
        stream: bool,
        reply: Any,
        req: dict[str, Any],
        tokens: list[str],
        chunk: Callable[[str, str], dict[str, Any]],
        tool_chunk: Callable[[], dict[str, Any]],
        whole: Callable[[], dict[str, Any]],
        kind: str,
        began: float,
    ) -> None:
        app = self.server.app
        started = time.perf_counter()
        load_ns = app.load(record, req.get("options"))
        loaded = time.perf_counter()
        index, prefix = app.acquire_slot(record.name, tokens)
        # The double's own work on the request (JSON, prompt, slot; not the load): what real
        # Ollama does in Go, in about a millisecond. Counted apart from the evaluation it
        # emulates, which starts only now (/lab/stats `work_ns`).
        app.add_work(
            record.name, index, int((started - began + time.perf_counter() - loaded) * 1e9)
        )
        try:
            self._evaluate(
                record, keep_alive, stream, reply, tokens, prefix, started, load_ns,
                chunk, tool_chunk, whole, kind,
            )  # fmt: skip
        finally:
            app.release_slot(record.name, index, tokens + tokenize(reply.content_text))

    def _evaluate(
        self,
        record: ModelRecord,
        keep_alive: float,
        stream: bool,
        reply: Any,
        tokens: list[str],
        prefix: int,
        started: float,
        load_ns: int,
        chunk: Callable[[str, str], dict[str, Any]],
        tool_chunk: Callable[[], dict[str, Any]],
        whole: Callable[[], dict[str, Any]],
        kind: str,
    ) -> None:
        app = self.server.app
        evaluated = max(len(tokens) - prefix, 1)
        reply.prompt_eval_count = evaluated if app.fault("prompt_cache_count") else len(tokens)
        prompt_rate = float(app.fault("prompt_tokens_per_second") or 0)
        generation_rate = float(app.fault("generation_tokens_per_second") or 0)
        # Paced against deadlines, not by sleeping the intervals one after the other: a sleep's
        # overshoot (~0.1 ms) and the time spent sending are not added to the next interval.
        eval_started = time.perf_counter()
        if prompt_rate:
            prompt_ns = int(evaluated / prompt_rate * 1e9)
            eval_started += evaluated / prompt_rate
            _pause_until(eval_started)
        else:
            prompt_ns = evaluated * 20_000
        delay = float(app.fault("chunk_delay") or 0)
        if generation_rate:
            delay += 1 / generation_rate
        crash_after = app.fault("crash_after_chunks")

        def final(item: dict[str, Any]) -> dict[str, Any]:
            eval_ns = max(int((time.perf_counter() - eval_started) * 1e9), reply.eval_count * 1000)
            total_ns = max(
                int((time.perf_counter() - started) * 1e9), load_ns + prompt_ns + eval_ns
            )
            item.update(
                done=True,
                done_reason=reply.done_reason,
                total_duration=total_ns,
                load_duration=load_ns,
                prompt_eval_count=reply.prompt_eval_count,
                prompt_eval_duration=prompt_ns,
                eval_count=reply.eval_count,
                eval_duration=eval_ns,
            )
            return item

        if not stream:
            if crash_after is not None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if delay:
                _pause_until(eval_started + delay * (len(reply.thinking) + len(reply.content)))
            app.keep(record, keep_alive)
            self.send_json(200, final(whole()))
            return
        out = NDJSONStream(self, buffered=not delay)
        pieces: list[tuple[str, str]] = [(t, "") for t in reply.thinking]
        pieces += [("", c) for c in reply.content]
        sends: list[Callable[[], dict[str, Any]]] = [
            functools.partial(chunk, thinking, content) for thinking, content in pieces
        ]
        if reply.tool_calls:
            sends.append(tool_chunk)
        due = eval_started
        for make in sends:
            if crash_after is not None and out.chunks >= crash_after:
                out.abort()
                return
            if delay:
                due += delay
                _pause_until(due)
            out.send(make())
        if crash_after is not None and out.chunks >= crash_after:
            out.abort()
            return
        app.keep(record, keep_alive)
        last = chunk("", "")
        if kind == "message":
            last["message"] = {"role": "assistant", "content": ""}
        out.send(final(last))
        out.end()

    # -- lab control --------------------------------------------------------------------------
    def get_faults(self, body: bytes) -> None:
        self.send_json(200, self.server.app.faults())

    def post_faults(self, body: bytes) -> None:
        app = self.server.app
        try:
            update = faults_mod.validate(json.loads(body or b"{}"))
        except ValueError as exc:  # FaultError and JSON errors
            raise RequestError(str(exc)) from None
        current = app.update_faults(update)
        self.send_json(200, current)
        if current.get("crash"):
            app.info("crash fault set: the lab double exits now with code 1")
            self.wfile.flush()
            os._exit(1)

    def delete_faults(self, body: bytes) -> None:
        self.server.app.clear_faults()
        self.send_json(200, {})

    def get_stats(self, body: bytes) -> None:
        self.send_json(200, self.server.app.stats())

    def delete_stats(self, body: bytes) -> None:
        self.server.app.reset_stats()
        self.send_json(200, self.server.app.stats())


ROUTES: dict[tuple[str, str], Callable[[Handler, bytes], None]] = {
    ("GET", "/"): Handler.root,
    ("GET", "/api/version"): Handler.version,
    ("GET", "/api/tags"): Handler.tags,
    ("GET", "/api/ps"): Handler.ps,
    ("POST", "/api/show"): Handler.show,
    ("POST", "/api/pull"): Handler.pull,
    ("DELETE", "/api/delete"): Handler.delete,
    ("POST", "/api/chat"): Handler.chat,
    ("POST", "/api/generate"): Handler.generate,
    ("GET", "/lab/faults"): Handler.get_faults,
    ("POST", "/lab/faults"): Handler.post_faults,
    ("PUT", "/lab/faults"): Handler.post_faults,
    ("DELETE", "/lab/faults"): Handler.delete_faults,
    ("GET", "/lab/stats"): Handler.get_stats,
    ("DELETE", "/lab/stats"): Handler.delete_stats,
}
Handler.routes = ROUTES
