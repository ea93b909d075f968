using Bytes = std::vector<std::uint8_t>;

// A UTC instant: nanoseconds since 1970-01-01T00:00:00Z.
struct Timestamp {
    std::int64_t ns = 0;
    bool operator==(const Timestamp& o) const { return ns == o.ns; }
    bool operator!=(const Timestamp& o) const { return ns != o.ns; }
    bool operator<(const Timestamp& o) const { return ns < o.ns; }
};

// An exact decimal: a count of 10^-9 units (1.5 is 1500000000). Never a double.
struct Decimal {
    std::int64_t units = 0;
    bool operator==(const Decimal& o) const { return units == o.units; }
    bool operator!=(const Decimal& o) const { return units != o.units; }

    // "189.12", "-0.000000001", "100": at most 9 decimal places; throws std::invalid_argument.
    static Decimal parse(const std::string& text) {
        constexpr std::uint64_t limit = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) + 1;
        std::size_t i = 0;
        bool negative = false;
        if (i < text.size() && (text[i] == '-' || text[i] == '+')) negative = text[i++] == '-';
        std::uint64_t units = 0;
        int places = -1;
        bool digits = false;
        auto grow = [&](unsigned digit) {
            if (units > (limit - digit) / 10) throw std::invalid_argument("out of range: " + text);
            units = units * 10 + digit;
        };
        for (; i < text.size(); ++i) {
            char c = text[i];
            if (c == '.' && places < 0) {
                places = 0;
                continue;
            }
            if (c < '0' || c > '9') throw std::invalid_argument("not a decimal: " + text);
            if (places >= 0 && ++places > 9) throw std::invalid_argument("more than 9 decimal places: " + text);
            grow(static_cast<unsigned>(c - '0'));
            digits = true;
        }
        if (!digits) throw std::invalid_argument("not a decimal: " + text);
        for (int p = places < 0 ? 0 : places; p < 9; ++p) grow(0);
        if (!negative && units == limit) throw std::invalid_argument("out of range: " + text);
        Decimal d;
        d.units = negative ? static_cast<std::int64_t>(0 - units) : static_cast<std::int64_t>(units);
        return d;
    }

    std::string str() const {
        std::uint64_t magnitude = units < 0 ? 0 - static_cast<std::uint64_t>(units) : static_cast<std::uint64_t>(units);
        std::string whole = std::to_string(magnitude / 1000000000);
        std::string fraction = std::to_string(magnitude % 1000000000);
        fraction.insert(0, 9 - fraction.size(), '0');
        while (!fraction.empty() && fraction.back() == '0') fraction.pop_back();
        return (units < 0 ? "-" : "") + whole + (fraction.empty() ? "" : "." + fraction);
    }
};

class DecodeError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// Appends little-endian fields to a byte buffer.
class Writer {
  public:
    Bytes bytes;

    void u8(std::uint8_t v) { bytes.push_back(v); }
    void u16(std::uint16_t v) { put(v, 2); }
    void u32(std::uint32_t v) { put(v, 4); }
    void u64(std::uint64_t v) { put(v, 8); }
    void i32(std::int32_t v) { put(static_cast<std::uint32_t>(v), 4); }
    void i64(std::int64_t v) { put(static_cast<std::uint64_t>(v), 8); }
    void f64(double v) {
        std::uint64_t raw;
        std::memcpy(&raw, &v, sizeof raw);
        put(raw, 8);
    }
    void boolean(bool v) { u8(v ? 1 : 0); }
    void timestamp(const Timestamp& v) { i64(v.ns); }
    void decimal(const Decimal& v) { i64(v.units); }
    void str(const std::string& v) {
        if (v.size() > 0xffff) throw std::length_error("str longer than 65535 bytes");
        u16(static_cast<std::uint16_t>(v.size()));
        bytes.insert(bytes.end(), v.begin(), v.end());
    }
    void text(const std::string& v) {
        u32(checked_u32(v.size()));
        bytes.insert(bytes.end(), v.begin(), v.end());
    }
    void blob(const Bytes& v) {
        u32(checked_u32(v.size()));
        bytes.insert(bytes.end(), v.begin(), v.end());
    }

  private:
    void put(std::uint64_t v, int n) {
        for (int i = 0; i < n; ++i) bytes.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    }
    static std::uint32_t checked_u32(std::size_t n) {
        if (n > 0xffffffffu) throw std::length_error("longer than 4 GiB");
        return static_cast<std::uint32_t>(n);
    }
};

// Reads little-endian fields from a buffer it does not own, never past its end.
class Reader {
  public:
    Reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
    explicit Reader(const Bytes& b) : Reader(b.data(), b.size()) {}

    std::size_t remaining() const { return size_ - pos_; }
    void finish() const {
        if (pos_ != size_) throw DecodeError("trailing bytes after the payload");
    }

    std::uint8_t u8() { return static_cast<std::uint8_t>(get(1)); }
    std::uint16_t u16() { return static_cast<std::uint16_t>(get(2)); }
    std::uint32_t u32() { return static_cast<std::uint32_t>(get(4)); }
    std::uint64_t u64() { return get(8); }
    std::int32_t i32() { return static_cast<std::int32_t>(static_cast<std::uint32_t>(get(4))); }
    std::int64_t i64() { return static_cast<std::int64_t>(get(8)); }
    double f64() {
        std::uint64_t raw = get(8);
        double v;
        std::memcpy(&v, &raw, sizeof v);
        return v;
    }
    bool boolean() {
        std::uint8_t b = u8();
        if (b > 1) throw DecodeError("bool byte is neither 0 nor 1");
        return b == 1;
    }
    Timestamp timestamp() { return Timestamp{i64()}; }
    Decimal decimal() { return Decimal{i64()}; }
    std::string str() { return utf8(u16()); }
    std::string text() { return utf8(u32()); }
    Bytes blob() {
        std::size_t n = u32();
        need(n);
        Bytes out(data_ + pos_, data_ + pos_ + n);
        pos_ += n;
        return out;
    }

  private:
    void need(std::size_t n) const {
        if (n > remaining()) throw DecodeError("payload ended early");
    }
    std::uint64_t get(int n) {
        need(static_cast<std::size_t>(n));
        std::uint64_t v = 0;
        for (int i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(data_[pos_ + i]) << (8 * i);
        pos_ += static_cast<std::size_t>(n);
        return v;
    }
    std::string utf8(std::size_t n) {
        need(n);
        std::string out(reinterpret_cast<const char*>(data_ + pos_), n);
        pos_ += n;
        if (!valid_utf8(out)) throw DecodeError("invalid UTF-8");
        return out;
    }
    static bool valid_utf8(const std::string& s) {
        std::size_t i = 0;
        while (i < s.size()) {
            unsigned char c = static_cast<unsigned char>(s[i]);
            std::size_t extra;
            std::uint32_t code;
            if (c < 0x80) {
                ++i;
                continue;
            } else if ((c & 0xe0) == 0xc0) {
                extra = 1;
                code = c & 0x1f;
            } else if ((c & 0xf0) == 0xe0) {
                extra = 2;
                code = c & 0x0f;
            } else if ((c & 0xf8) == 0xf0) {
                extra = 3;
                code = c & 0x07;
            } else {
                return false;
            }
            if (extra >= s.size() - i) return false;
            for (std::size_t k = 1; k <= extra; ++k) {
                unsigned char next = static_cast<unsigned char>(s[i + k]);
                if ((next & 0xc0) != 0x80) return false;
                code = (code << 6) | (next & 0x3f);
            }
            static const std::uint32_t smallest[] = {0, 0x80, 0x800, 0x10000};
            if (code < smallest[extra] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return false;
            i += extra + 1;
        }
        return true;
    }

    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t pos_ = 0;
};

template <class T, class F>
void write_opt(Writer& w, const std::optional<T>& v, F write) {
    w.u8(v ? 1 : 0);
    if (v) write(*v);
}

template <class T, class F>
void write_list(Writer& w, const std::vector<T>& v, F write) {
    if (v.size() > 0xffffffffu) throw std::length_error("list longer than 2^32 - 1 items");
    w.u32(static_cast<std::uint32_t>(v.size()));
    for (const T& item : v) write(item);
}

template <class T, class F>
std::optional<T> read_opt(Reader& r, F read) {
    std::uint8_t present = r.u8();
    if (present > 1) throw DecodeError("presence byte is neither 0 nor 1");
    if (!present) return std::nullopt;
    return read();
}

template <class T, class F>
std::vector<T> read_list(Reader& r, F read) {
    std::uint32_t count = r.u32();
    std::vector<T> out;
    out.reserve(std::min<std::size_t>(count, r.remaining()));
    for (std::uint32_t i = 0; i < count; ++i) out.push_back(read());
    return out;
}

