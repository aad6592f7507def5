"""Everything that reads or writes a workspace (WORKDIR): its layout and lock (`layout`), the
read-side ledger API every reader uses (`ledger`), the derived files summary.json and the best/
latest pointers (`pointers`), the staged proposal (`proposals`), notes and labbook
(`recording`) and the HTML report (`report`). Each workspace file has one writing module here."""
