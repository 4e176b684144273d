package s3

// ReceiptFor makes a receipt, for tests.
var ReceiptFor = receiptFor
