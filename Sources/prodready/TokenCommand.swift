import ArgumentParser
import Foundation
import ProdReadyService

/// Mints a bearer token the reference services accept, for tests and for people with curl.
struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Print a signed bearer token (HS256) for the reference services.",
        discussion: """
        The secret is PRODREADY_JWT_SECRET when it is set, else the one kept in the state directory's jwt-secret \
        file, which `prodready up` hands to the services it starts. Roles: reader (read routes), writer (write \
        routes), admin (both). Only the token is printed, so `TOKEN=$(prodready token …)` works.
        """
    )

    @Option(help: "The token's subject (sub): who is calling.")
    var sub: String

    @Option(help: "Comma-separated roles, e.g. reader,writer or admin.")
    var roles: String

    @Option(help: "The tenant whose data the token may see.")
    var tenant: String

    @Option(help: "How long the token is valid: seconds, or a number with s, m, h or d (at most 366 days).")
    var ttl: String = "1h"

    @OptionGroup var common: CommonOptions

    func validate() throws {
        guard !sub.isEmpty, sub.count <= 256 else { throw ValidationError("--sub must be 1 to 256 characters") }
        guard !tenant.isEmpty, tenant.count <= 128 else { throw ValidationError("--tenant must be 1 to 128 characters") }
        for role in roleList where role.range(of: "^[a-z][a-z0-9_-]{0,62}$", options: .regularExpression) == nil {
            throw ValidationError("--roles: '\(role)' is not a role name (lower-case letters, digits, _ and -)")
        }
        if roleList.isEmpty { throw ValidationError("--roles must name at least one role") }
        if parseTimeToLive(ttl) == nil { throw ValidationError("--ttl '\(ttl)' is not a duration such as 90s, 15m, 1h or 7d (at most 366 days)") }
    }

    var roleList: [String] { roles.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }

    func run() async throws {
        do {
            let secret = try ServiceSecrets.jwtSecret(home: common.resolvedHome)
            let authority = try await TokenAuthority(secret: secret)
            print(try await authority.mint(subject: sub, roles: roleList, tenant: tenant, ttl: parseTimeToLive(ttl)!))
        } catch {
            throw fail(error)
        }
    }
}
