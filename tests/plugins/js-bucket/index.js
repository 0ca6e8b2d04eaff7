class MyPlugin {
  constructor() {
    this.codeGeneration = {
      generateCode: (settings) => {
        // Your plugin logic here
        // settings contains the data passed from the execution call

        // Example: Generate Python code
        return `
import pandas as pd
import numpy as np

# Generated code based on settings: ${JSON.stringify(settings)}
data = pd.read_csv('${settings.dataset || "data.csv"}')
result = data.head(${settings.rows || 10})
print(result)
        `.trim();
      },
    };
  }
}

module.exports = MyPlugin;
