"""The Ollama adapter: OpenAI requests translated to Ollama's native API, and back.

Chat goes to ``POST /api/chat``, legacy completions to ``POST /api/generate``, embeddings to
``POST /api/embed``, the model list comes from ``GET /api/tags``; the base URL is the server root
(``http://localhost:11434``). What Ollama cannot express (``n`` > 1, log probabilities, a forced
``tool_choice``, image URLs that are not ``data:`` URLs, token-id prompts, ...) is refused with
``errors.CannotExpress``; docs/providers/ollama.md has every mapping and policy. Replies are
translated by ``ollama_stream``, and tool calls written as text are repaired by ``tool_repair``
when the adapter is built with ``repair_tool_calls=True``.
"""

from __future__ import annotations

import base64
from typing import TypeVar
from urllib.parse import unquote_to_bytes

import msgspec
from msgspec import UNSET, UnsetType

from actorproxy import errors
from actorproxy.adapters import ollama_stream as replies
from actorproxy.adapters.base import Endpoint, Exchange, StreamTranslator
from actorproxy.adapters.openai import FORWARDED_REQUEST_HEADERS
from actorproxy.net.base import Headers, UpstreamRequest
from actorproxy.schema import ollama, openai

T = TypeVar("T")

PATHS: dict[Endpoint, str] = {
    "chat": "/api/chat",
    "completions": "/api/generate",
    "embeddings": "/api/embed",
}
ID_PREFIXES: dict[Endpoint, str] = {"chat": "chatcmpl-", "completions": "cmpl-", "embeddings": ""}


class OllamaAdapter:
    """Translator to Ollama's native API.

    Stateless and without I/O: one instance serves every call, and a cancelled call leaves no
    in-flight work here.
    """

    def __init__(
        self,
        *,
        headers: dict[str, str] | None = None,
        keep_alive: str | None = None,
        repair_tool_calls: bool = False,
    ) -> None:
        fixed: Headers = [(b"content-type", b"application/json"), (b"accept", b"*/*")]
        fixed.extend(
            (name.lower().encode(), value.encode()) for name, value in (headers or {}).items()
        )
        self._headers = fixed
        self._keep_alive: str | UnsetType = UNSET if keep_alive is None else keep_alive
        self._repair = repair_tool_calls

    def encode_request(self, exchange: Exchange) -> UpstreamRequest:
        body = self._encode_body(exchange)
        headers = [*self._headers, (b"x-request-id", exchange.request_id.encode())]
        headers.extend(h for h in exchange.headers if h[0] in FORWARDED_REQUEST_HEADERS)
        return UpstreamRequest(b"POST", PATHS[exchange.endpoint], headers, body)

    def decode_response(self, exchange: Exchange, body: bytes) -> bytes:
        head = self._head(exchange)
        if exchange.endpoint == "chat":
            return replies.decode_chat(head, body)
        if exchange.endpoint == "completions":
            return replies.decode_generate(head, body)
        as_base64 = _view(exchange).encoding_format == "base64"
        return replies.decode_embeddings(head, body, as_base64=as_base64)

    def open_stream(self, exchange: Exchange) -> StreamTranslator | None:
        if exchange.endpoint == "chat":
            return replies.ChatStream(self._head(exchange))
        if exchange.endpoint == "completions":
            return replies.GenerateStream(self._head(exchange))
        return None  # embeddings never stream

    def decode_error(self, status: int, headers: Headers, body: bytes) -> errors.ProxyError:
        return replies.decode_error(status, headers, body)

    def models_request(self) -> UpstreamRequest:
        """The request for the models the server has pulled."""
        headers = [h for h in self._headers if h[0] != b"content-type"]
        return UpstreamRequest(b"GET", "/api/tags", headers, b"")

    def decode_models(self, body: bytes) -> list[str]:
        """The model names in a ``/api/tags`` reply."""
        try:
            tags = ollama.tags_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise errors.CannotUnderstand(f"Ollama sent an invalid model list: {exc}") from None
        return [model.name or model.model for model in tags.models]

    def _encode_body(self, exchange: Exchange) -> bytes:
        model, stream = exchange.upstream_model, exchange.stream
        if exchange.endpoint == "chat":
            chat = errors.decode_json(openai.chat_request_decoder, exchange.body)
            return ollama.encoder.encode(encode_chat(chat, model, stream, self._keep_alive))
        if exchange.endpoint == "completions":
            legacy = errors.decode_json(openai.completion_request_decoder, exchange.body)
            return ollama.encoder.encode(encode_generate(legacy, model, stream, self._keep_alive))
        embed = errors.decode_json(openai.embedding_request_decoder, exchange.body)
        return ollama.encoder.encode(encode_embed(embed, model, self._keep_alive))

    def _head(self, exchange: Exchange) -> replies.Head:
        view = _view(exchange)
        include_usage = view.stream_options is not None and view.stream_options.include_usage
        offered = self._repair and exchange.endpoint == "chat" and view.tool_choice != "none"
        names = frozenset(tool.function.name for tool in view.tools or ()) if offered else None
        return replies.Head(
            id=ID_PREFIXES[exchange.endpoint] + exchange.request_id,
            created=exchange.created,
            model=exchange.upstream_model,
            include_usage=include_usage is True,
            tool_names=names or frozenset(),
        )


# --- chat -------------------------------------------------------------------------------------


def encode_chat(
    request: openai.ChatCompletionRequest, model: str, stream: bool, keep_alive: str | UnsetType
) -> ollama.ChatRequest:
    """The ``/api/chat`` body for ``request``; ``errors.CannotExpress`` for what Ollama lacks."""
    _refuse("n", isinstance(request.n, int) and request.n > 1, "one choice (n=1)")
    _refuse("logprobs", request.logprobs is True, "no log probabilities")
    top_logprobs = isinstance(request.top_logprobs, int) and request.top_logprobs > 0
    _refuse("top_logprobs", top_logprobs, "no log probabilities")
    _refuse("logit_bias", bool(request.logit_bias), "no logit bias")
    options = ollama.Options(
        num_predict=_first(request.max_completion_tokens, request.max_tokens),
        temperature=_given(request.temperature),
        top_p=_given(request.top_p),
        seed=_given(request.seed),
        stop=_stop(request.stop),
        frequency_penalty=_given(request.frequency_penalty),
        presence_penalty=_given(request.presence_penalty),
    )
    return ollama.ChatRequest(
        model=model,
        messages=encode_messages(request.messages),
        stream=stream,
        tools=_tools(request.tools, request.tool_choice),
        format=_format(request.response_format),
        options=_nonempty(options),
        keep_alive=keep_alive,
    )


def encode_messages(messages: list[openai.Message]) -> list[ollama.Message]:
    names: dict[str, str] = {}  # tool call id -> function name, as far as the history has got
    return [_message(index, message, names) for index, message in enumerate(messages)]


def _message(index: int, message: openai.Message, names: dict[str, str]) -> ollama.Message:
    match message:
        case openai.SystemMessage() | openai.DeveloperMessage():
            return ollama.Message(role="system", content=_text(message.content))
        case openai.UserMessage():
            return _user(index, message)
        case openai.AssistantMessage():
            return _assistant(index, message, names)
        case openai.ToolMessage():
            name = names.get(message.tool_call_id, UNSET)
            return ollama.Message(role="tool", content=_text(message.content), tool_name=name)
        case openai.FunctionMessage():
            return ollama.Message(
                role="tool", content=message.content or "", tool_name=message.name
            )


def _text(content: str | list[openai.TextPart]) -> str:
    return content if isinstance(content, str) else "\n".join(part.text for part in content)


def _user(index: int, message: openai.UserMessage) -> ollama.Message:
    if isinstance(message.content, str):
        return ollama.Message(role="user", content=message.content)
    texts: list[str] = []
    images: list[str] = []
    for number, part in enumerate(message.content):
        where = f"messages[{index}].content[{number}]"
        if isinstance(part, openai.TextPart):
            texts.append(part.text)
        elif isinstance(part, openai.ImagePart):
            images.append(_image(part.image_url.url, f"{where}.image_url.url"))
        else:
            raise errors.CannotExpress("Ollama takes only text and image parts.", param=where)
    return ollama.Message(role="user", content="\n".join(texts), images=images or UNSET)


def _image(url: str, param: str) -> str:
    """The base64 data of a ``data:`` URL; Ollama cannot fetch images itself."""
    scheme, _, rest = url.partition(":")
    header, comma, data = rest.partition(",")
    if scheme.strip().lower() != "data" or not comma:
        message = "Ollama takes images inline only: send them as data: URLs (base64)."
        raise errors.CannotExpress(message, param=param)
    if header.lower().endswith(";base64"):
        return data
    return base64.b64encode(unquote_to_bytes(data)).decode("ascii")


def _assistant(
    index: int, message: openai.AssistantMessage, names: dict[str, str]
) -> ollama.Message:
    calls: list[ollama.ToolCall] = []
    for number, call in enumerate(message.tool_calls or ()):
        where = f"messages[{index}].tool_calls[{number}]"
        _refuse(f"{where}.type", call.type != "function", "function tool calls only")
        names[call.id] = call.function.name
        calls.append(_call(call.function, f"{where}.function.arguments"))
    if isinstance(message.function_call, openai.FunctionCall):
        calls.append(_call(message.function_call, f"messages[{index}].function_call.arguments"))
    content = message.content or ""
    if not isinstance(content, str):
        content = "\n".join(
            p.text if isinstance(p, openai.TextPart) else p.refusal for p in content
        )
    return ollama.Message(role="assistant", content=content, tool_calls=calls or UNSET)


def _call(function: openai.FunctionCall, param: str) -> ollama.ToolCall:
    """Ollama wants the arguments as an object, where OpenAI has a JSON string."""
    text = function.arguments
    try:
        arguments = msgspec.json.decode(text or "{}", type=dict[str, object])
    except msgspec.DecodeError:
        message = "Tool call arguments must be a JSON object for Ollama."
        raise errors.CannotExpress(message, param=param) from None
    return ollama.ToolCall(
        function=ollama.ToolCallFunction(name=function.name, arguments=arguments)
    )


def _tools(
    tools: list[openai.Tool] | UnsetType, choice: str | dict[str, object] | UnsetType
) -> list[ollama.Tool] | UnsetType:
    if not tools or choice == "none":
        return UNSET
    _refuse("tool_choice", choice not in (UNSET, "auto"), "no forced tool choice")
    for number, tool in enumerate(tools):
        _refuse(f"tools[{number}].type", tool.type != "function", "function tools only")
    return [ollama.Tool(function=_function(tool.function)) for tool in tools]


def _function(f: openai.FunctionDef) -> ollama.FunctionDef:
    return ollama.FunctionDef(name=f.name, description=f.description, parameters=f.parameters)


def _format(response_format: dict[str, object] | UnsetType) -> ollama.Format:
    kind = response_format.get("type") if isinstance(response_format, dict) else "text"
    if kind == "text":
        return UNSET
    if kind == "json_object":
        return "json"
    _refuse("response_format.type", kind != "json_schema", "text, json_object or json_schema")
    spec = response_format.get("json_schema") if isinstance(response_format, dict) else None
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else "json"


# --- completions and embeddings ---------------------------------------------------------------


def encode_generate(
    request: openai.CompletionRequest, model: str, stream: bool, keep_alive: str | UnsetType
) -> ollama.GenerateRequest:
    """The ``/api/generate`` body for a legacy completion request."""
    _refuse("n", isinstance(request.n, int) and request.n > 1, "one choice (n=1)")
    _refuse("best_of", isinstance(request.best_of, int) and request.best_of > 1, "best_of=1")
    _refuse("echo", request.echo is True, "no echo of the prompt")
    _refuse("logprobs", isinstance(request.logprobs, int), "no log probabilities")
    options = ollama.Options(
        num_predict=_given(request.max_tokens),
        temperature=_given(request.temperature),
        top_p=_given(request.top_p),
        seed=_given(request.seed),
        stop=_stop(request.stop),
    )
    return ollama.GenerateRequest(
        model=model,
        prompt=_prompt(request.prompt),
        stream=stream,
        suffix=_given(request.suffix),
        options=_nonempty(options),
        keep_alive=keep_alive,
    )


def _prompt(prompt: openai.TextOrTokens | None) -> str:
    if prompt is None or isinstance(prompt, str):
        return prompt or ""
    if len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    message = "Ollama completes one text prompt per request; send a single string."
    raise errors.CannotExpress(message, param="prompt")


def encode_embed(
    request: openai.EmbeddingRequest, model: str, keep_alive: str | UnsetType
) -> ollama.EmbedRequest:
    """The ``/api/embed`` body; ``encoding_format`` is applied to the reply on our side."""
    given = request.input
    texts = given if isinstance(given, str) else [item for item in given if isinstance(item, str)]
    _refuse("input", len(texts) != len(given), "text inputs only, no token ids")
    return ollama.EmbedRequest(
        model=model, input=texts, dimensions=request.dimensions, keep_alive=keep_alive
    )


# --- small helpers ----------------------------------------------------------------------------


def _view(exchange: Exchange) -> ollama.ReplyView:
    try:
        return ollama.reply_view_decoder.decode(exchange.body)
    except msgspec.DecodeError:
        return ollama.ReplyView()  # encode_request has already refused such a body


def _refuse(param: str, refused: bool, supported: str) -> None:
    if refused:
        message = f"Ollama cannot express '{param}' as given; it supports {supported}."
        raise errors.CannotExpress(message, param=param)


def _given(value: T | UnsetType | None) -> T | UnsetType:
    return UNSET if value is None else value


def _first(*values: int | UnsetType | None) -> int | UnsetType:
    return next((value for value in values if isinstance(value, int)), UNSET)


def _stop(stop: openai.Stop) -> list[str] | UnsetType:
    if isinstance(stop, str):
        return [stop]
    return stop or UNSET


def _nonempty(options: ollama.Options) -> ollama.Options | UnsetType:
    return UNSET if options == ollama.Options() else options
