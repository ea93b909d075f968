// A whole frame: length, header, payload.
inline Bytes encode_frame(MessageType type, const Bytes& payload, std::uint64_t request_id = 0,
                          SQLCommand command = static_cast<SQLCommand>(0), SQLTable table = static_cast<SQLTable>(0),
                          std::uint16_t flags = 0) {
    Writer w;
    w.u32(static_cast<std::uint32_t>(HEADER_SIZE + payload.size()));
    encode(w, Header{MAGIC, VERSION, static_cast<std::uint8_t>(type), static_cast<std::uint8_t>(command),
                     static_cast<std::uint8_t>(table), flags, request_id});
    w.bytes.insert(w.bytes.end(), payload.begin(), payload.end());
    return w.bytes;
}

// Encode a layout into a payload.
template <class T>
Bytes to_payload(const T& value) {
    Writer w;
    encode(w, value);
    return w.bytes;
}

// Decode a whole payload into a layout: trailing bytes are an error.
template <class T>
T from_payload(const Bytes& payload) {
    Reader r(payload);
    T value;
    decode(r, value);
    r.finish();
    return value;
}

struct Frame {
    Header header;
    Bytes payload;
};

// Splits a byte stream into frames, checking length, magic and version before buffering a body.
class FrameReader {
  public:
    explicit FrameReader(std::uint32_t max_frame = DEFAULT_MAX_FRAME) : max_frame_(max_frame) {}
    void set_max_frame(std::uint32_t max_frame) { max_frame_ = max_frame; }
    void feed(const std::uint8_t* data, std::size_t size) { buffer_.insert(buffer_.end(), data, data + size); }

    // The next whole frame, if one is buffered; throws DecodeError on a framing error.
    std::optional<Frame> next() {
        if (buffer_.size() < 4) return std::nullopt;
        Reader prefix(buffer_.data(), 4);
        std::uint32_t length = prefix.u32();
        if (length < HEADER_SIZE) throw DecodeError("frame length below the header size");
        if (length > max_frame_) throw DecodeError("frame length above max_frame");
        if (buffer_.size() < 4 + static_cast<std::size_t>(length)) return std::nullopt;
        Reader head(buffer_.data() + 4, HEADER_SIZE);
        Frame frame{decode_Header(head), Bytes(buffer_.begin() + 4 + HEADER_SIZE, buffer_.begin() + 4 + length)};
        if (frame.header.magic != MAGIC) throw DecodeError("bad magic");
        if (frame.header.version != VERSION) throw DecodeError("bad version byte");
        buffer_.erase(buffer_.begin(), buffer_.begin() + 4 + length);
        return frame;
    }

  private:
    std::uint32_t max_frame_;
    Bytes buffer_;
};

