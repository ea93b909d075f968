// Load for bench/select_by_key.py: CONNECTIONS threads, each a tradehub::Client selecting one order by
// key, one request at a time, REQUESTS times; prints every latency in microseconds, one per line.
//
//   select_latency HOST PORT TOKEN CONNECTIONS REQUESTS CLIENT_ORDER_ID
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <thread>
#include <vector>

#include "tradehub_client.hpp"

using namespace tradehub;

int main(int argc, char** argv) {
    if (argc != 7) {
        std::cerr << "usage: select_latency HOST PORT TOKEN CONNECTIONS REQUESTS CLIENT_ORDER_ID\n";
        return 2;
    }
    std::string host = argv[1];
    auto port = static_cast<std::uint16_t>(std::atoi(argv[2]));
    std::string token = argv[3];
    int connections = std::atoi(argv[4]);
    int requests = std::atoi(argv[5]);
    std::string key = argv[6];
    std::vector<double> all;
    std::mutex lock;
    int failed = 0;
    std::vector<std::thread> threads;
    for (int c = 0; c < connections; ++c) {
        threads.emplace_back([&] {
            try {
                Client hub(host, port, Role::FRONTEND, token, "select-latency");
                OrderSelect query;
                query.keys.push_back(OrderKey{key});
                std::vector<double> mine;
                mine.reserve(static_cast<std::size_t>(requests));
                for (int i = 0; i < requests; ++i) {
                    auto start = std::chrono::steady_clock::now();
                    OrderResponse answer = hub.select<SQLTable::ORDER>(query);
                    auto end = std::chrono::steady_clock::now();
                    if (answer.rows.size() != 1) throw std::runtime_error("order not found");
                    mine.push_back(std::chrono::duration<double, std::micro>(end - start).count());
                }
                hub.shutdown();
                std::lock_guard<std::mutex> guard(lock);
                all.insert(all.end(), mine.begin(), mine.end());
            } catch (const std::exception& e) {
                std::lock_guard<std::mutex> guard(lock);
                std::cerr << e.what() << "\n";
                ++failed;
            }
        });
    }
    for (auto& t : threads) t.join();
    for (double us : all) std::cout << us << "\n";
    return failed ? 1 : 0;
}
