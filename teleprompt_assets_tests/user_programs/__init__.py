"""DSPy programs written the way a user of teleprompt-assets would write them, outside the product
package, and the synthetic traffic they are tested on (the matrix test and benchmark)."""
