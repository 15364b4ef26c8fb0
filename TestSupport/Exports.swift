// Suites measure with the same validator the benchmark commands use.
@_exported public import ProdReadyPerformance
