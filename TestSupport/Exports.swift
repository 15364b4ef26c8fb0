// Suites measure with the same validator the benchmark commands use.
@_exported public import ProdReadyPerformance
// Every convergence check accounts with the same checker the CLI's scenarios use.
@_exported public import ProdReadyVerification
