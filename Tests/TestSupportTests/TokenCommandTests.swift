import Testing
import Foundation
import ProdReadyService
import TestSupport

@Suite("prodready token")
struct TokenCommandTests {
    @Test("mints a token the services' authority accepts with its sub, roles and tenant; keeps one secret per home; bad options exit non-zero with one precise line")
    func mint() async throws {
        let home = try CLITests.scratchHome()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let minted = try await CLITests.prodready(["token", "--sub", "alice", "--roles", "reader,writer", "--tenant", "t1", "--ttl", "15m", "--home", home], environment: ["PRODREADY_JWT_SECRET": ""])
        try #require(minted.status == 0, "\(minted.output)")
        let token = minted.output.trimmingCharacters(in: .whitespacesAndNewlines)
        let secret = try String(contentsOfFile: home + "/jwt-secret", encoding: .utf8)
        let attributes = try FileManager.default.attributesOfItem(atPath: home + "/jwt-secret")
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        let identity = try await TokenAuthority(secret: secret).identity(authorization: "Bearer " + token)
        #expect(identity == ServiceIdentity(subject: "alice", roles: ["reader", "writer"], tenant: "t1"))
        let again = try await CLITests.prodready(["token", "--sub", "bob", "--roles", "admin", "--tenant", "t2", "--home", home], environment: ["PRODREADY_JWT_SECRET": ""])
        #expect(try String(contentsOfFile: home + "/jwt-secret", encoding: .utf8) == secret, "the second call reuses the secret")
        _ = try await TokenAuthority(secret: secret).identity(authorization: "Bearer " + again.output.trimmingCharacters(in: .whitespacesAndNewlines))

        let cases: [([String], [String: String], String)] = [
            (["--roles", "Reader"], [:], "--roles: 'Reader' is not a role name"),
            (["--roles", ","], [:], "--roles must name at least one role"),
            (["--ttl", "5x"], [:], "--ttl '5x' is not a duration"),
            (["--ttl", "400d"], [:], "--ttl '400d' is not a duration"),
            (["--tenant", ""], [:], "--tenant must be 1 to 128 characters"),
            ([], ["PRODREADY_JWT_SECRET": "short"], "PRODREADY_JWT_SECRET is invalid: expected at least 32 bytes, got 5"),
        ]
        for (override, environment, message) in cases {
            var options = ["--sub": "a", "--roles": "admin", "--tenant": "t"]
            var extra: [String] = []
            for pair in stride(from: 0, to: override.count, by: 2) {
                if options[override[pair]] != nil { options[override[pair]] = override[pair + 1] } else { extra += [override[pair], override[pair + 1]] }
            }
            let arguments = ["token", "--home", home] + options.sorted { $0.key < $1.key }.flatMap { [$0.key, $0.value] } + extra
            let outcome = try await CLITests.prodready(arguments, environment: environment)
            #expect(outcome.status != 0 && outcome.output.contains(message), "\(arguments): \(outcome.status) \(outcome.output)")
            #expect(!outcome.output.contains("short\n") && !outcome.output.contains("eyJ"), "no secret and no token printed")
        }
    }
}
