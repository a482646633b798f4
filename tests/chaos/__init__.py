"""The chaos suite (`make chaos`): faults under steady agent load, checked against the contract."""
