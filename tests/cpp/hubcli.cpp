// A small command-line tool for the cross-language tests: each command is one
// call through tradehub_client.hpp, its result printed one field per line.
//
//   hubcli HOST PORT ROLE TOKEN insert-tick SEQ PRICE
//   hubcli HOST PORT ROLE TOKEN ticks SYMBOL
//   hubcli HOST PORT ROLE TOKEN predictions SYMBOL
//   hubcli HOST PORT ROLE TOKEN held-calls    two calls to a hub that stops while the first waits
//   hubcli HOST PORT ROLE TOKEN decode-checks
#include <cstdlib>
#include <iostream>
#include <string>

#include "tradehub_client.hpp"

using namespace tradehub;

static int decode_checks() {
    // Bounds-checked decoding: every malformed payload throws DecodeError, none reads past the end.
    MarketTickRow row;
    row.symbol = "AAPL";
    row.kind = "trade";
    row.price = Decimal::parse("1.5");
    row.size = Decimal::parse("2");
    MarketTickRows rows;
    rows.rows.push_back(row);
    Bytes good = to_payload(rows);
    int refused = 0;
    auto expect_refused = [&](const Bytes& bad, const char* what) {
        try {
            from_payload<MarketTickRows>(bad);
            std::cout << "ACCEPTED " << what << "\n";
        } catch (const DecodeError& e) {
            std::cout << "refused " << what << ": " << e.what() << "\n";
            ++refused;
        }
    };
    for (std::size_t cut = 0; cut < good.size(); ++cut) {
        expect_refused(Bytes(good.begin(), good.begin() + static_cast<long>(cut)), "truncated");
    }
    Bytes trailing = good;
    trailing.push_back(0);
    expect_refused(trailing, "trailing byte");
    // The payload opens with echo (a bool), then the rows' count.
    Bytes bad_bool = good;
    bad_bool[0] = 2;
    expect_refused(bad_bool, "bool byte 2");
    Bytes huge_count = good;
    huge_count[1] = huge_count[2] = huge_count[3] = huge_count[4] = 0xff;
    expect_refused(huge_count, "list count 2^32-1");
    Bytes bad_utf8 = good;
    bad_utf8[1 + 4 + 2] = 0xff;
    expect_refused(bad_utf8, "invalid UTF-8");
    Bytes bad_presence = good;
    bad_presence[1 + 4 + 2 + 4 + 8 + 8 + 2 + 5] = 7;
    expect_refused(bad_presence, "presence byte 7");
    std::cout << "refused " << refused << " of " << good.size() + 5 << "\n";
    return refused == static_cast<int>(good.size()) + 5 ? 0 : 1;
}

int main(int argc, char** argv) {
    if (argc < 6) {
        std::cerr << "usage: hubcli HOST PORT ROLE TOKEN COMMAND [ARGS]\n";
        return 2;
    }
    std::string command = argv[5];
    if (command == "decode-checks") return decode_checks();
    try {
        Role role = std::string(argv[3]) == "ml" ? Role::ML : Role::FRONTEND;
        Client hub(argv[1], static_cast<std::uint16_t>(std::atoi(argv[2])), role, argv[4], "hubcli");
        if (command == "insert-tick") {
            MarketTickRow row;
            row.symbol = "XLANG";
            row.seq = std::atoll(argv[6]);
            row.ts = Timestamp{1700000000000000000LL + row.seq};
            row.kind = "trade";
            row.price = Decimal::parse(argv[7]);
            row.size = Decimal::parse("1");
            row.conditions = {"cpp"};
            std::cout << "affected " << hub.insert<SQLTable::MARKET_TICK>({row}).affected << "\n";
        } else if (command == "ticks") {
            MarketTickSelect query;
            query.symbol = argv[6];
            for (const MarketTickRow& row : hub.select<SQLTable::MARKET_TICK>(query).rows) {
                std::cout << "tick " << row.seq << " " << row.ts.ns << " " << row.price->str() << " " << row.conditions.at(0)
                          << "\n";
            }
        } else if (command == "predictions") {
            MlPredictionSelect query;
            query.symbol = argv[6];
            for (const MlPredictionRow& p : hub.select<SQLTable::ML_PREDICTION>(query).rows) {
                std::cout << "prediction " << p.id << " " << p.model_id << " " << p.ts.ns << " " << p.horizon << " "
                          << std::hexfloat << p.value << " " << p.confidence << std::defaultfloat << " "
                          << (p.predicted_side ? *p.predicted_side : "-") << "\n";
            }
        } else if (command == "held-calls") {
            // tests/hub.py's notes batch, to tests/test_clients.py's HeldRoute.
            Writer batch;
            batch.str("b");
            batch.u32(0);
            Bytes answer = hub.call(SQLCommand::INSERT, SQLTable::MARKET_TICK, batch.bytes);
            std::cout << "answer " << std::string(answer.begin(), answer.end()) << "\n";
            try {
                hub.call(SQLCommand::INSERT, SQLTable::MARKET_TICK, batch.bytes);
                std::cout << "answered after the hub's SHUTDOWN\n";
            } catch (const HubError& e) {
                std::cout << "refused " << static_cast<int>(e.code) << ": " << e.what() << "\n";
            }
            std::cout << "shutdown " << hub.shutdown() << "\n";
            return 0;
        } else {
            std::cerr << "unknown command " << command << "\n";
            return 2;
        }
        hub.shutdown();
    } catch (const HubError& e) {
        std::cout << "hub error " << static_cast<int>(e.code) << " row " << e.row_index << ": " << e.what() << "\n";
        return 1;
    }
    return 0;
}
