"""Reading and writing HL7 v2 messages in their ER7 (pipe-and-hat) encoding.

A small reader of our own rather than a library's: the checks a receiver must
make before it may answer (a first segment that is MSH, one field separator
and four distinct encoding characters, none of them letters or digits) are
exactly the ones that decide between AR and a parse, and every value we read
is addressed as segment-field-repetition-component-subcomponent, which is what
an ERR segment must point at.  Segments end with a carriage return; ``\\n`` and
``\\r\\n`` are accepted too, since many senders use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_MESSAGE_BYTES = 1024 * 1024


@dataclass
class V2Error(Exception):
    """A problem with a message, answered in an ERR segment (code from HL7 table 0357)."""

    code: str  # 100 segment sequence, 101 required field missing, 102 data type, 103 table value not found,
    # 200 unsupported message type, 201 unsupported event, 202 unsupported processing id,
    # 203 unsupported version, 204 unknown key identifier, 205 duplicate key, 207 application internal error
    text: str
    segment: str = ""
    sequence: int = 1  # which occurrence of the segment
    field: int | None = None
    component: int | None = None
    reject: bool = False  # AR (the message as a whole cannot be taken) rather than AE (its content is wrong)

    def __str__(self) -> str:
        return self.text


CODE_TEXT = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}


@dataclass(frozen=True)
class Separators:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent

    def unescape(self, text: str) -> str:
        if self.escape not in text:
            return text
        e = self.escape
        out: list[str] = []
        i = 0
        while i < len(text):
            ch = text[i]
            end = text.find(e, i + 1) if ch == e else -1
            if end == -1:
                out.append(ch)
                i += 1
                continue
            code = text[i + 1 : end]
            mapped = {
                "F": self.field,
                "S": self.component,
                "R": self.repetition,
                "E": self.escape,
                "T": self.subcomponent,
                ".br": "\n",
            }.get(code)
            if mapped is None and code.startswith("X") and len(code) % 2 == 1:
                try:
                    mapped = bytes.fromhex(code[1:]).decode("latin-1")
                except ValueError:
                    mapped = None
            if mapped is None:  # formatting escapes (\H\, \N\, ...) carry no text
                mapped = ""
            out.append(mapped)
            i = end + 1
        return "".join(out)

    def escape_text(self, text: str) -> str:
        e = self.escape
        text = text.replace(e, f"{e}E{e}")
        for raw, code in ((self.field, "F"), (self.component, "S"), (self.repetition, "R"), (self.subcomponent, "T")):
            text = text.replace(raw, f"{e}{code}{e}")
        return text.replace("\r\n", f"{e}.br{e}").replace("\n", f"{e}.br{e}").replace("\r", f"{e}.br{e}")


@dataclass
class Segment:
    """One segment's fields as raw (still escaped) strings; ``fields[0]`` is the segment id.

    For MSH the numbering follows the standard: MSH-1 is the field separator, so
    ``field(n)`` accounts for it.
    """

    name: str
    fields: list[str]
    seps: Separators
    sequence: int = 1  # 1 for the first segment of this name in the message, 2 for the second, ...
    # Each field split and unescaped once: mappers ask for a field's components one ``get`` at a time.
    _split: dict[int, list[list[list[str]]]] = field(default_factory=dict, repr=False, compare=False)

    def raw(self, n: int) -> str:
        if self.name == "MSH":
            if n == 1:
                return self.seps.field
            n -= 1
        return self.fields[n] if 0 < n < len(self.fields) else ""

    def repetitions(self, n: int) -> list[list[list[str]]]:
        """Field ``n`` as repetitions of components of subcomponents, unescaped (shared: not to be changed)."""
        found = self._split.get(n)
        if found is None:
            found = self._split[n] = self._repetitions(n)
        return found

    def _repetitions(self, n: int) -> list[list[list[str]]]:
        raw = self.raw(n)
        if not raw:
            return []
        if self.name == "MSH" and n == 2:
            return [[[raw]]]
        s = self.seps
        return [
            [[s.unescape(sub) for sub in comp.split(s.subcomponent)] for comp in rep.split(s.component)]
            for rep in raw.split(s.repetition)
        ]

    def get(self, n: int, component: int = 1, subcomponent: int = 1, repetition: int = 0) -> str:
        reps = self.repetitions(n)
        if repetition >= len(reps):
            return ""
        comps = reps[repetition]
        if component > len(comps):
            return ""
        subs = comps[component - 1]
        return subs[subcomponent - 1] if subcomponent <= len(subs) else ""

    def components(self, n: int, repetition: int = 0) -> list[str]:
        """The components of one repetition of field ``n`` (first subcomponent of each), padded to 30."""
        reps = self.repetitions(n)
        comps = [c[0] for c in reps[repetition]] if repetition < len(reps) else []
        return comps + [""] * (30 - len(comps))

    def error(self, n: int, code: str, text: str, *, component: int | None = None) -> V2Error:
        return V2Error(code, text, self.name, self.sequence, n, component)


@dataclass
class Message:
    segments: list[Segment]
    seps: Separators
    text: str

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def first(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def require(self, name: str) -> Segment:
        found = self.first(name)
        if found is None:
            raise V2Error("100", f"The message has no {name} segment, which a {self.message_type} needs", name)
        return found

    @property
    def message_type(self) -> str:
        """``ADT^A04`` (MSH-9.1 and MSH-9.2)."""
        return f"{self.msh.get(9, 1)}^{self.msh.get(9, 2)}"

    @property
    def control_id(self) -> str:
        return self.msh.get(10)

    @property
    def sender(self) -> str:
        """MSH-3^MSH-4 (namespace ids), which names the sending system in attributions and duplicate checks."""
        return f"{self.msh.get(3)}^{self.msh.get(4)}"


def parse(data: bytes | str) -> Message:
    """Split a message into segments and fields; raise ``V2Error`` (reject) when it is not HL7 v2 at all."""
    if isinstance(data, bytes):
        if len(data) > MAX_MESSAGE_BYTES:
            raise V2Error("207", f"The message is larger than {MAX_MESSAGE_BYTES} bytes", reject=True)
        text = _decode(data)
    else:
        text = data
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    if "\x00" in text:
        raise V2Error("102", "The message contains NUL bytes, which HL7 v2 text never does", reject=True)
    if not text.startswith("MSH"):
        raise V2Error("100", "The message does not start with an MSH segment", "MSH", reject=True)
    if len(text) < 8:
        raise V2Error("100", "The MSH segment is truncated before its encoding characters", "MSH", reject=True)
    field_sep = text[3]
    encoding = text[4:8]
    if field_sep.isalnum() or field_sep.isspace():
        raise V2Error("102", f"MSH-1 '{field_sep}' cannot be a field separator", "MSH", 1, 1, reject=True)
    chars = field_sep + encoding
    if len(set(chars)) != 5 or any(c.isalnum() or c.isspace() for c in encoding):
        raise V2Error(
            "102",
            f"MSH-2 '{encoding}' must be four distinct encoding characters (component, repetition, escape, "
            "subcomponent; usually ^~\\&), none a letter, digit or the field separator",
            "MSH",
            1,
            2,
            reject=True,
        )
    if len(text) > 8 and text[8] != field_sep:
        raise V2Error("102", "MSH-2 must be exactly four encoding characters", "MSH", 1, 2, reject=True)
    seps = Separators(field_sep, encoding[0], encoding[1], encoding[2], encoding[3])
    segments: list[Segment] = []
    counts: dict[str, int] = {}
    for line in text.split("\r"):
        if not line.strip():
            continue
        parts = line.split(field_sep)
        name = parts[0]
        if len(name) != 3 or not name.isalnum() or not name[0].isalpha() or not name.isupper():
            raise V2Error("100", f"'{name[:20]}' is not a segment id (three upper-case letters or digits)", reject=True)
        counts[name] = counts.get(name, 0) + 1
        segments.append(Segment(name, parts, seps, counts[name]))
    return Message(segments, seps, text + "\r")


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # v2's default character set (MSH-18 empty) is ASCII; latin-1 is its superset


@dataclass
class Builder:
    """Segments written field by field, escaping every value: ``seg("PID", "1", "", ["123", "", "", "HOSP"])``.

    A field is a string, a list of components (each a string or a list of
    subcomponents), or a list of repetitions wrapped in ``Repeat``.
    """

    seps: Separators = field(default_factory=Separators)
    lines: list[str] = field(default_factory=list)

    def seg(self, name: str, *fields: object) -> Builder:
        s = self.seps
        if name == "MSH":
            # MSH-1 is the separator itself and MSH-2 the encoding characters: ``fields`` start at MSH-3.
            rendered = [self._field(f) for f in fields]
            self.lines.append(s.field.join(["MSH", s.encoding_characters, *rendered]).rstrip(s.field))
        else:
            self.lines.append(s.field.join([name, *(self._field(f) for f in fields)]).rstrip(s.field))
        return self

    def _field(self, value: object) -> str:
        s = self.seps
        if isinstance(value, Repeat):
            return s.repetition.join(self._field(v) for v in value.items)
        if isinstance(value, list | tuple):
            comps = []
            for comp in value:
                if isinstance(comp, list | tuple):
                    comps.append(s.subcomponent.join(s.escape_text(str(x)) for x in comp).rstrip(s.subcomponent))
                else:
                    comps.append(s.escape_text(str(comp)))
            return s.component.join(comps).rstrip(s.component)
        return s.escape_text(str(value)) if value is not None else ""

    def text(self) -> str:
        return "\r".join(self.lines) + "\r"


@dataclass(frozen=True)
class Repeat:
    items: tuple[object, ...]

    def __init__(self, *items: object) -> None:
        object.__setattr__(self, "items", items)
