"""The tags of a plain XML document as arrays, found at C speed (no object per element).

Reading a large GPX file with ElementTree costs a Python object per element, most of the
reading time. Most trace files are *plain* XML, for which the tags can be found with NumPy
alone: every ``<`` opens a tag and the next ``>`` closes it. :func:`tokenize` returns the
positions, kinds, nesting levels and local names of the tags of such a document, and None for
any other document, which the caller then reads with a real XML parser. Plain means:

* well-formed (checked first with expat, namespace-aware as ElementTree is);
* encoded as UTF-8 (declared so, or not declared; a byte-order mark is allowed);
* no CDATA sections, DOCTYPE, processing instructions (other than the XML declaration),
  entity or character references (``&``), nor ``<`` or ``>`` inside text or attribute values.

Comments are removed first, and line ends normalized, as an XML parser does; element text is
then exactly what ElementTree gives as ``.text`` (the characters up to the first child or the
end tag; None when there are none).
"""

from __future__ import annotations

import re
import xml.parsers.expat
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.ingest.readers.base import string_buffers, strings_from_slices

_BOM = b"\xef\xbb\xbf"
_COMMENT = re.compile(rb"<!--.*?-->", re.S)
_DECLARATION = re.compile(rb"<\?xml\b[^>]*\?>")
_ENCODING = re.compile(rb"""encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[list(b" \t\n")] = True
_KEY_BYTES = 8  # local names are compared by their first 8 bytes (as one integer) and length


@dataclass(frozen=True)
class Tags:
    """The tags of a plain XML document, in document order.

    Attributes
    ----------
    data
        The document's bytes (comments removed, line ends normalized) as ``uint8``.
    opens, closes
        Position of each tag's ``<`` and ``>``.
    is_end
        ``</name>`` tags.
    is_empty
        ``<name .../>`` tags.
    level
        Nesting level of the element a tag opens or closes (the root element is 0).
    name_start, name_end
        Where each tag's local name (without a namespace prefix) starts and ends.
    name_key
        The first bytes of each local name as an integer, to compare names fast.
    """

    data: np.ndarray
    opens: np.ndarray
    closes: np.ndarray
    is_end: np.ndarray
    is_empty: np.ndarray
    level: np.ndarray
    name_start: np.ndarray
    name_end: np.ndarray
    name_key: np.ndarray

    def __len__(self) -> int:
        return len(self.opens)

    def named(self, name: bytes) -> np.ndarray:
        """Mark the tags whose local name is ``name``."""
        key = int.from_bytes(name[:_KEY_BYTES], "little")
        mask = (self.name_key == key) & ((self.name_end - self.name_start) == len(name))
        for offset in range(_KEY_BYTES, len(name)):  # the rest of a long name
            found = np.flatnonzero(mask)
            mask[found] = self.data[self.name_start[found] + offset] == name[offset]
        return mask

    def between(self, start: int, stop: int) -> Tags:
        """Return the tags ``start`` to ``stop`` (excluded) on their own, in the same data."""
        span = slice(start, stop)
        return Tags(
            self.data,
            self.opens[span],
            self.closes[span],
            self.is_end[span],
            self.is_empty[span],
            self.level[span],
            self.name_start[span],
            self.name_end[span],
            self.name_key[span],
        )

    def alike(self, grid: np.ndarray) -> bool:
        """Whether each row of tags in ``grid`` is like the first: the same names and kinds.

        Tag ``grid[i, j]`` is compared with ``grid[0, j]``: the same local name, and both
        opening, closing or empty (so rows of whole elements also nest alike).
        """
        first = grid[0]
        lengths = self.name_end - self.name_start
        for values in (self.name_key, lengths, self.is_end, self.is_empty):
            if not (values[grid] == values[first]).all():
                return False
        for column in np.flatnonzero(lengths[first] > _KEY_BYTES):  # the rest of long names
            name_starts = self.name_start[grid[:, column]]
            for offset in range(_KEY_BYTES, int(lengths[first[column]])):
                if not (
                    self.data[name_starts + offset] == self.data[name_starts[0] + offset]
                ).all():
                    return False
        return True

    def attributes(
        self, tags: np.ndarray, names: tuple[bytes, ...]
    ) -> dict[bytes, pa.StringArray] | None:
        """Return the values of the attributes ``names`` of ``tags`` (null where absent).

        ``tags`` are tag indices in document order. Handles the usual form ``name="value"``
        (or single quotes); returns None when one of these tags writes it otherwise (spaces
        around ``=``, a tab or line break in the value, both kinds of quote in one tag), for
        the caller to use a real parser.
        """
        if len(tags) == 0:
            return {name: pa.array([], type=pa.string()) for name in names}
        return self._attributes_in_order(tags, names) or self._attributes_by_search(tags, names)

    def _attributes_in_order(
        self, tags: np.ndarray, names: tuple[bytes, ...]
    ) -> dict[bytes, pa.StringArray] | None:
        """:meth:`attributes` of tags all written ``<tag a="..." b="...">`` (or ``/>``).

        That is: exactly the attributes ``names``, in that order, each after one space and in
        double quotes, with no single quote, tab or line break in a value (values
        :meth:`_attributes_by_search` leaves to a parser). None if a tag is written otherwise.
        Found at fixed places after each tag's name, with no search of the whole document.
        """
        data, last = self.data, len(self.data) - 1
        double = np.flatnonzero(data == ord('"'))
        position = self.name_end[tags]
        bounds = {}
        for name in names:
            prefix = b" " + name + b'="'
            for offset, byte in enumerate(prefix):
                if not (data[np.minimum(position + offset, last)] == byte).all():
                    return None
            start = position + len(prefix)
            following = np.searchsorted(double, start)
            if following.max() >= len(double):
                return None
            end = double[following]
            bounds[name] = (start, end)
            position = end + 1
        closes = self.closes[tags]
        at_slash = data[np.minimum(position, last)] == ord("/")
        if not ((position == closes) | ((position + 1 == closes) & at_slash)).all():
            return None
        found = {name: self.texts(start, end) for name, (start, end) in bounds.items()}
        if any(_holds_any(values, b"'\t\n") for values in found.values()):
            return None
        return found

    def _attributes_by_search(
        self, tags: np.ndarray, names: tuple[bytes, ...]
    ) -> dict[bytes, pa.StringArray] | None:
        """:meth:`attributes`, each name searched for in the whole document."""
        data = self.data
        double, single = np.flatnonzero(data == ord('"')), np.flatnonzero(data == ord("'"))
        tag_start, tag_end = self.opens[tags], self.closes[tags]
        if (
            (_between(double, tag_start, tag_end) > 0) & (_between(single, tag_start, tag_end) > 0)
        ).any():
            return None  # a value holding the other kind of quote: let a parser read it
        breaks = np.flatnonzero((data == ord("\t")) | (data == ord("\n")))
        found = {}
        for name in names:
            values = self._attribute(tags, name, double, single, breaks)
            if values is None:
                return None
            found[name] = values
        return found

    def _attribute(
        self,
        tags: np.ndarray,
        name: bytes,
        double: np.ndarray,
        single: np.ndarray,
        breaks: np.ndarray,
    ) -> pa.StringArray | None:
        """One attribute of :meth:`attributes`, given the positions of quotes and breaks."""
        data, size = self.data, len(name)
        places = np.flatnonzero(data[: len(data) - size - 1] == name[0])
        places = places[places > 0]
        for offset in range(1, size):
            places = places[data[places + offset] == name[offset]]
        owner = np.maximum(np.searchsorted(self.opens, places, side="right") - 1, 0)
        row = np.minimum(np.searchsorted(tags, owner), len(tags) - 1)
        quotes_before = _between(double, self.opens[owner], places) + _between(
            single, self.opens[owner], places
        )
        keep = (
            (tags[row] == owner)
            & (places > self.name_end[owner])
            & (places < self.closes[owner])
            & _WHITESPACE[data[places - 1]]
            & (quotes_before % 2 == 0)  # not inside another attribute's value
        )
        places, row = places[keep], row[keep]
        after = data[places + size]
        if _WHITESPACE[after].any():
            return None
        places, row = places[after == ord("=")], row[after == ord("=")]
        quote = data[places + size + 1]
        if not ((quote == ord('"')) | (quote == ord("'"))).all():
            return None
        value_start = places + size + 2
        value_end = np.empty_like(value_start)
        for mark, marks in ((ord('"'), double), (ord("'"), single)):
            quoted = quote == mark  # a value ends at the next quote of its kind
            value_end[quoted] = marks[np.searchsorted(marks, value_start[quoted])]
        if _between(breaks, value_start, value_end).any():
            return None
        starts, ends = np.full(len(tags), -1), np.full(len(tags), -1)
        starts[row], ends[row] = value_start, value_end
        return self.texts(starts, ends)

    def text_bounds(self, tags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start and end of the text that follows each tag in ``tags`` (up to the next tag)."""
        following = np.append(self.opens, len(self.data))[tags + 1]
        return self.closes[tags] + 1, following

    def texts(self, starts: np.ndarray, ends: np.ndarray) -> pa.StringArray:
        """Return the texts ``data[start:end]`` as Arrow strings, null where start is -1."""
        return strings_from_slices(self.data, starts, ends, starts >= 0)

    def text(self, tag: int | None) -> str | None:
        """Return the stripped text of the element ``tag`` opens (None if none, or no tag)."""
        if tag is None or self.is_empty[tag]:
            return None
        start, end = self.text_bounds(np.array([tag]))
        return self.data[start[0] : end[0]].tobytes().decode("utf-8").strip() or None

    def end_of(self, tag: int) -> int:
        """Return the index of the tag that closes the element ``tag`` opens."""
        if self.is_empty[tag]:
            return tag
        after = (self.level[tag + 1 :] == self.level[tag]) & self.is_end[tag + 1 :]
        return tag + 1 + int(np.argmax(after))

    def first_child(self, parent: int | None, name: bytes) -> int | None:
        """Return the first child element of ``parent`` named ``name`` (local name), or None."""
        if parent is None or self.is_empty[parent]:
            return None
        span = slice(parent + 1, self.end_of(parent))
        found = np.flatnonzero(
            (self.level[span] == self.level[parent] + 1)
            & ~self.is_end[span]
            & self.named(name)[span]
        )
        return parent + 1 + int(found[0]) if len(found) else None


def tokenize(data: bytes) -> Tags | None:
    """Find the tags of a plain XML document; None if it is not plain (see the module doc)."""
    if not _well_formed(data):
        return None
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if b"<!--" in data:
        data = _COMMENT.sub(b"", data)
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if b"&" in data or b"\x00" in data:  # NUL: UTF-16
        return None
    body = 0  # where the document after its XML declaration starts
    declaration = _DECLARATION.match(data)
    if declaration is not None:
        encoding = _ENCODING.search(declaration.group(0))
        if encoding is not None and encoding.group(1).lower() not in (b"utf-8", b"utf8"):
            return None
        body = declaration.end()
    raw = np.frombuffer(data, dtype=np.uint8, offset=body)  # a view, nothing copied
    opens = np.flatnonzero(raw == ord("<"))
    closes = np.flatnonzero(raw == ord(">"))
    if len(opens) != len(closes) or len(opens) == 0:
        return None
    if (closes < opens).any() or (opens[1:] < closes[:-1]).any():
        return None
    after_open = raw[opens + 1]  # a ``>`` follows each ``<``, so this is inside the data
    if ((after_open == ord("!")) | (after_open == ord("?"))).any():
        return None  # CDATA, DOCTYPE or a processing instruction
    return _tags(raw, opens, closes)


def _tags(raw: np.ndarray, opens: np.ndarray, closes: np.ndarray) -> Tags:
    is_end = raw[opens + 1] == ord("/")
    is_empty = (raw[closes - 1] == ord("/")) & ~is_end
    delta = (~is_end & ~is_empty).astype("int64") - is_end
    after = np.cumsum(delta)
    level = np.where(is_end, after, after - delta)
    name_start = opens + 1 + is_end
    delimiters = np.flatnonzero(
        (raw == ord(" "))
        | (raw == ord("\n"))
        | (raw == ord("\t"))
        | (raw == ord("/"))
        | (raw == ord(">"))
    )
    name_end = delimiters[np.searchsorted(delimiters, name_start)]
    colons = np.flatnonzero(raw == ord(":"))
    if len(colons):  # a prefix: the local name starts after the name's last colon
        tag = np.searchsorted(opens, colons, side="right") - 1  # the tag holding each colon
        in_name = (tag >= 0) & (colons >= name_start[tag]) & (colons < name_end[tag])
        name_start = name_start.copy()
        np.maximum.at(name_start, tag[in_name], colons[in_name] + 1)
    keys = _name_keys(raw, name_start, name_end)
    return Tags(raw, opens, closes, is_end, is_empty, level, name_start, name_end, keys)


def _name_keys(raw: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Return the first ``_KEY_BYTES`` bytes of each name ``raw[start:end]`` as integers."""
    padded = np.concatenate([raw, np.zeros(_KEY_BYTES, dtype=np.uint8)])
    # every byte offset read as a little-endian 8-byte integer (a view, nothing copied)
    windows = np.ndarray((len(raw),), dtype="<u8", buffer=padded, strides=(1,))
    lengths = np.minimum(ends - starts, _KEY_BYTES - 1).astype(np.uint64)
    low_bytes = (np.uint64(1) << (np.uint64(8) * lengths)) - np.uint64(1)
    keep = np.where(ends - starts >= _KEY_BYTES, np.uint64(2**64 - 1), low_bytes)
    return windows[starts] & keep


def _holds_any(strings: pa.StringArray, characters: bytes) -> bool:
    """Whether any of the strings holds any of the (ASCII) ``characters``."""
    offsets, data = string_buffers(strings)
    text = data[offsets[0] : offsets[-1]].tobytes()
    return any(text.find(character) >= 0 for character in characters)


def _between(positions: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Count the sorted ``positions`` in each range ``[start, end)``."""
    return np.searchsorted(positions, ends) - np.searchsorted(positions, starts)


def _well_formed(data: bytes) -> bool:
    parser = xml.parsers.expat.ParserCreate(namespace_separator="}")
    try:
        parser.Parse(data, True)
    except (xml.parsers.expat.ExpatError, ValueError, LookupError):
        return False
    return True
